"""Config input a careless or hostile hand gives: each is refused at load with one line
naming the file and the key (or byte), never decoded into something else or loaded as fine.
"""

from __future__ import annotations

import tomllib

import pytest

from subvault.config.load import load_config, parse_config
from subvault.config.sample import render_sample
from subvault.errors import ConfigError

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
SOURCE = '[[source]]\nname = "vps1"\nurl = "{url}"\ndest = "/mnt/backup"\n{extra}'
OBJECT = '[[target]]\nname = "offsite"\ntype = "object"\nurl = "file:///srv/offsite"\nrecipients = {recipients}\n'


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, name="c.toml")
    return str(info.value)


def test_a_config_that_is_not_utf8_is_refused_naming_the_file_and_the_byte(tmp_path):
    path = tmp_path / "subvault.toml"
    path.write_bytes(b'[defaults]\ntimeline = "24h \xff7d"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{path}: ") and "UTF-8" in line and "byte 27 (line 2)" in line, line


@pytest.mark.parametrize("port", ["0", "65536", "70000"])
def test_an_ssh_url_with_a_port_out_of_range_is_refused(port):
    for text in (SOURCE.format(url=f"ssh://root@vps1:{port}/", extra=""),
                 f'[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "ssh://root@pi:{port}/mnt/b"\n'):
        (line,) = _error(text).splitlines()
        assert ": url: " in line and port in line and "1 to 65535" in line, line


@pytest.mark.parametrize("puller", ["../x", "a b", "-o", "", "x/y"])
def test_a_puller_that_is_not_a_name_is_refused(puller):
    (line,) = _error(SOURCE.format(url="ssh://root@vps1:22/", extra=f'puller = "{puller}"\n')).splitlines()
    assert line.startswith('c.toml: source "vps1": puller: ') and "not a valid name" in line, line


def test_a_source_name_that_is_not_a_name_is_refused():
    (line,) = _error(SOURCE.replace('"vps1"', '"../up"').format(url="ssh://v:22/", extra="")).splitlines()
    assert 'name: "../up" is not a valid name' in line, line


@pytest.mark.parametrize("bad", ["age1notakey", RECIPIENT[:-1] + "q", RECIPIENT.upper(), "AGE-SECRET-KEY-1QQQQQQQQQQQQQQ"])
def test_recipients_are_checked_at_load_naming_the_key_and_the_value(bad):
    (line,) = _error(OBJECT.format(recipients=f'["{RECIPIENT}", "{bad}"]')).splitlines()
    assert line.startswith('c.toml: target "offsite": recipients[1]: ') and "not an age public key" in line, line
    assert "SECRET-KEY-1QQQQ" not in line  # an identity pasted by mistake is never echoed whole


def test_a_valid_recipient_and_a_plugin_recipient_load():
    plugin = "age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t"
    cfg = parse_config(OBJECT.format(recipients=f'["{RECIPIENT}", "{plugin}"]'))
    assert cfg.target[0].recipients == [RECIPIENT, plugin]


def test_the_sample_shows_a_source_subvolume_and_its_keys():
    sample = render_sample()
    assert "[[source.subvolume]]" in sample
    section = sample.split("[[source.subvolume]]", 1)[1]
    assert "\nname = " in section and "\npath = " in section
    data = tomllib.loads(sample)
    assert set(data["source"][0]["subvolume"][0]) == {"name", "path"}
    parse_config(sample)


def _read_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = str(info.value).splitlines()
    return line


def test_a_config_that_is_a_directory_is_refused_saying_what_to_give(tmp_path):
    line = _read_error(tmp_path)
    assert line.startswith(f"{tmp_path}: ") and "a directory" in line and "expected the config file" in line, line


def test_a_config_that_is_a_fifo_or_a_device_is_refused_without_waiting_or_reading(tmp_path):
    import os

    fifo = tmp_path / "subvault.toml"
    os.mkfifo(fifo)  # nobody writes to it: reading would wait forever
    assert "not a regular file" in _read_error(fifo)
    assert "not a regular file" in _read_error("/dev/zero")  # reading would never end


def test_a_huge_config_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "subvault.toml"
    with big.open("wb") as f:
        f.truncate(300 << 20)
    line = _read_error(big)
    assert "too large" in line and "MiB" in line, line


def test_a_symlink_loop_says_so(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    line = _read_error(tmp_path / "a")
    assert "symbolic links" in line and "--config" in line, line


def test_an_unreadable_config_says_what_to_do(tmp_path, monkeypatch):
    import os

    path = tmp_path / "subvault.toml"
    path.write_text("")
    real_open = os.open

    def denied(p, *args, **kwargs):  # root reads every file: this is what any other user meets
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    line = _read_error(path)
    assert "Permission denied" in line and "root" in line, line


def test_toml_nested_too_deeply_is_a_config_error_not_a_crash():
    line = _error("a = " + "[" * 100_000 + "]" * 100_000)
    assert line.startswith("c.toml: not valid TOML: ") and "nested too deeply" in line, line


def test_a_utf8_byte_order_mark_is_read_past(tmp_path):
    path = tmp_path / "subvault.toml"
    path.write_bytes(b'\xef\xbb\xbf[defaults]\ntimeline = "1d"\n')  # as some Windows editors save it
    assert load_config(path).defaults.timeline == "1d"


def test_init_refuses_to_write_over_a_directory(tmp_path):
    from subvault.run.init import write_config

    with pytest.raises(ConfigError) as info:
        write_config("", str(tmp_path), force=True)
    assert "is a directory" in str(info.value) and "subvault.toml" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("table", ["subvolume", "target", "exclude", "hook", "source"])
def test_a_single_table_where_an_array_of_tables_belongs_says_to_double_the_brackets(table):
    (line,) = _error(f'[{table}]\nname = "a"\n').splitlines()
    assert line == f"c.toml: {table}: expected [[{table}]] (one per item), got a single [{table}] table: write [[{table}]]", line
