"""An lgf plugin as a third party writes one: a sink and a classifier, found by entry point.

``[[sinks]] use = "example_jsonl"`` appends ``id cause`` lines to ``path``;
``[[classifiers]] use = "example_prefix"`` answers ``cause`` for wait reasons starting with
``prefix``, and leaves every other event to the next classifier.
"""

from dataclasses import dataclass

from lgf import Component, hookimpl


@dataclass
class SinkOptions:
    path: str


class ExampleSink:
    def __init__(self, options, ctx):
        self.fh = open(options.path, "a", encoding="utf-8")

    def send(self, event):
        self.fh.write(f"{event.id} {event.cause} {event.kind}\n")
        self.fh.flush()

    def close(self):
        self.fh.close()


@dataclass
class ClassifierOptions:
    prefix: str
    cause: str = "example"


class PrefixClassifier:
    def __init__(self, options, ctx):
        self.options = options

    @hookimpl
    def lgf_classify(self, event):
        if event.wait_reason.startswith(self.options.prefix):
            return self.options.cause
        return None


@hookimpl
def lgf_components():
    return [Component("sink", "example_jsonl", ExampleSink, SinkOptions),
            Component("classifier", "example_prefix", PrefixClassifier, ClassifierOptions)]
