"""Watch-layer outputs: Apprise notifications, dead-man pings, Prometheus metrics.

`lifecycle.monitored` ties them into one start/finish/fail lifecycle around a job.
"""

from subvault.notify.apprise_notify import Message, register_url_secrets, send, send_message, validate_url
from subvault.notify.lifecycle import Job, monitored
from subvault.notify.metrics import LayerStatus, MetricsWriteFailed, build_registry, write_textfile
from subvault.notify.ping import Pinger, register_ping_secret, validate_ping_url
from subvault.notify.unit_failure import notify_unit_failure

__all__ = [
    "Job",
    "LayerStatus",
    "Message",
    "MetricsWriteFailed",
    "Pinger",
    "build_registry",
    "monitored",
    "notify_unit_failure",
    "register_ping_secret",
    "register_url_secrets",
    "send",
    "send_message",
    "validate_ping_url",
    "validate_url",
    "write_textfile",
]
