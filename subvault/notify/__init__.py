"""Watch-layer outputs: Apprise notifications, dead-man pings, Prometheus metrics.

`lifecycle.monitored` ties them into one start/finish/fail lifecycle around a job.
Modules: apprise_notify, ping, metrics, lifecycle, unit_failure. Import them by name:
this package imports none of them, so a command that never notifies loads no Apprise.
"""
