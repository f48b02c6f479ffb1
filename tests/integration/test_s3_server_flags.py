"""The `rclone serve s3` the tests and benches run (s3server.SERVE_FLAGS) is still a faithful
S3 server: what S3 computes and checks for an upload is all there. Only rclone's own second
and third MD5 of its copy into the directory is off (see s3server.py and bench/README.md).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from s3server import S3Server

pytestmark = pytest.mark.integration

PART = 5 << 20  # S3's smallest part but the last


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    server = S3Server.start(tmp_path_factory.mktemp("s3root"))
    try:
        server.make_bucket("flags")
        yield boto3.client(
            "s3", endpoint_url=server.endpoint, region_name="us-east-1",
            aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )
    finally:
        server.stop()


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_object_etag_is_its_md5(client) -> None:
    body = bytes(range(256)) * 4096
    put = client.put_object(Bucket="flags", Key="k1", Body=body)
    assert put["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert client.head_object(Bucket="flags", Key="k1")["ETag"].strip('"') == hashlib.md5(body).hexdigest()


def test_wrong_content_md5_refused_and_nothing_stored(client) -> None:
    with pytest.raises(ClientError, match="BadDigest"):
        client.put_object(Bucket="flags", Key="k2", Body=b"what was sent", ContentMD5=_md5_b64(b"something else"))
    with pytest.raises(ClientError):
        client.head_object(Bucket="flags", Key="k2")


def test_multipart_part_etags_and_wrong_part_digest(client) -> None:
    parts = [b"a" * PART, b"b" * PART, b"c" * 1000]
    up = client.create_multipart_upload(Bucket="flags", Key="m")["UploadId"]
    with pytest.raises(ClientError, match="BadDigest"):
        client.upload_part(Bucket="flags", Key="m", UploadId=up, PartNumber=1, Body=parts[0],
                           ContentMD5=_md5_b64(parts[1]))
    # rclone fails the whole upload then (the part was already streamed), as its docs say
    with pytest.raises(ClientError, match="NoSuchUpload"):
        client.abort_multipart_upload(Bucket="flags", Key="m", UploadId=up)

    up = client.create_multipart_upload(Bucket="flags", Key="m")["UploadId"]
    done = []
    for number, data in enumerate(parts, 1):
        resp = client.upload_part(Bucket="flags", Key="m", UploadId=up, PartNumber=number, Body=data)
        assert resp["ETag"].strip('"') == hashlib.md5(data).hexdigest()
        done.append({"ETag": resp["ETag"], "PartNumber": number})
    client.complete_multipart_upload(Bucket="flags", Key="m", UploadId=up, MultipartUpload={"Parts": done})
    assert client.get_object(Bucket="flags", Key="m")["Body"].read() == b"".join(parts)
