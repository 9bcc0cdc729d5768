# mypkg/__init__.py
import json
import urllib.request
from dataclasses import dataclass

from lgf import Component, Duration, hookimpl


@dataclass
class WebhookOptions:             # the [[sinks]] table's keys, checked by `lgf check`
    url: str
    timeout: Duration = Duration(5_000_000_000)  # written timeout = "5s"


class WebhookSink:
    default_receive = "alerts"    # without it, a sink gets stall events, not alerts

    def __init__(self, options, ctx):
        self.url, self.timeout_s = options.url, options.timeout / 1e9

    def send(self, event):
        # Raise on failure: OSError (refused, timeout, HTTP error) is retried with backoff;
        # any other exception parks the alert on disk until `lgf spool retry`.
        body = json.dumps(event.to_dict()).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s):
            pass


class DbClassifier:
    def __init__(self, options, ctx):
        pass

    @hookimpl
    def lgf_classify(self, event):
        if any(f.startswith("database/sql.") for f in event.stack_summary):
            return "db_wait"      # a cause of your own
        return None               # let the next classifier decide


@hookimpl
def lgf_components():
    return [Component("sink", "webhook", WebhookSink, WebhookOptions),
            Component("classifier", "db", DbClassifier)]
