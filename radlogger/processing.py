"""The processing endpoint base: one derived output topic per input topic, computed lazily.

Every processing endpoint (``fft``, ``calibrate``, ``lag_normalize``, ``lag_fft``,
``integrate``, ...) needs the same mechanics, and they must agree with each other and with the
dataflow graph, so they live here once:

* an ``output`` option: a template for the output *quantity*, which may use ``{quantity}``
  (the input's); the device prefix is kept: ``wsa1.iq`` + ``spectrum`` -> ``wsa1.spectrum``,
  ``widar.lagset`` + ``{quantity}_norm`` -> ``widar.lagset_norm``.  Checked when the endpoint
  is built, so a bad template is a one-line configuration error, not a failure per item;
* ``produces`` for the graph (``radlogger.graph`` formats it with ``{device}`` and
  ``{quantity}``, split at the first dot exactly as :meth:`ProcessingEndpoint.out_topic` is);
* laziness: :meth:`ProcessingEndpoint.wants` answers the broker's transitive demand question
  (``Broker.has_demand``) from the demand for this endpoint's own output, so a chain whose end
  has no consumer idles as a whole; :meth:`ProcessingEndpoint.demanded` drops, and counts in
  ``skipped``, the items of a batch whose output nobody uses before any work is done.

This module is core: it knows nothing of any device or endpoint plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from .endpoint import Endpoint
from .measurement import Measurement
from .options import Option, OptionError, merge_options
from .topics import TOPIC_RE

__all__ = ["PublishingEndpoint", "ProcessingEndpoint", "check_output", "derive_topic"]


def check_output(key: str, template: str, example: str = "{quantity}_out") -> str:
    """Validate an output template (the value of option ``key``); returns it.

    Why here and not at publish time: a template that cannot name a topic would otherwise
    fail on every item, deep in the broker, long after the configuration was accepted.
    """
    try:
        name = template.format(quantity="q")
        same = template.format(quantity="q2") == "q2" and name == "q"
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        raise OptionError(key, f"{key} = {template!r}: only {{quantity}} may be used, e.g. "
                          f"{example}") from None
    if not name or "." in name or not TOPIC_RE.match(name):
        raise OptionError(key, f"{key} = {template!r}: must be a quantity name (letters, "
                          f"digits, '_' or '-', no dots), e.g. {example}")
    if same:
        raise OptionError(key, f"{key} = {template!r}: the output would be the input topic "
                          f"(a loop), e.g. {example}")
    return template


def derive_topic(topic: str, template: str) -> str:
    """``wsa1.iq`` + ``spectrum`` -> ``wsa1.spectrum``: same device, the template's quantity.

    Topics are ``<device>.<quantity>`` and device names have no dots, so the device is what
    precedes the first dot (as in the graph).  A topic without a dot is all quantity.
    """
    device, dot, quantity = topic.partition(".")
    if not dot:
        return template.format(quantity=topic)
    return f"{device}.{template.format(quantity=quantity)}"


def _nothing_listens(topic: str) -> bool:
    return False  # not attached to a pipeline


class PublishingEndpoint(Endpoint):
    """Base of endpoints that put measurements back into the pipeline.

    The pipeline gives it an outlet (its output goes past the queue's bound, so a processing
    chain never waits on the broker that feeds it) and the broker's transitive demand question.
    """

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self._outlet: Any = None
        self._demand: Callable[[str], bool] = _nothing_listens

    def attach_outlet(self, outlet: Any, has_subscribers: Callable[[str], bool]) -> None:
        self._outlet = outlet
        self._demand = has_subscribers

    def publish(self, m: Measurement) -> bool:
        """Put a derived measurement back into the pipeline."""
        if self._outlet is None:
            raise RuntimeError(f"endpoint {self.name} is not attached to a pipeline")
        return bool(self._outlet.push(m))

    def publish_many(self, ms: list[Measurement]) -> int:
        """:meth:`publish` for a batch's outputs with one queue operation (per-packet spectra at
        28,400/s: a method call and a queue append per item saved); returns how many went."""
        if self._outlet is None:
            raise RuntimeError(f"endpoint {self.name} is not attached to a pipeline")
        return int(self._outlet.push_many(ms))

    def has_subscribers(self, topic: str) -> bool:
        """Whether anything will use ``topic``: processing endpoints skip work when not.

        Transitive: a subscriber that is itself a lazy processing endpoint (it implements
        ``wants(topic)``) counts only if something consumes its own output.
        """
        return self._demand(topic)


class ProcessingEndpoint(PublishingEndpoint):
    """Base of endpoints that publish derived measurements on ``<device>.<output>``.

    A subclass sets :attr:`output_default` (e.g. ``"{quantity}_norm"`` or ``"spectrum"``),
    implements ``handle_batch`` starting with ``items = self.demanded(batch)``, and publishes
    on ``self.out_topic(m.topic)``.
    """

    #: default of the ``output`` option; each processing kind sets its own
    output_default: ClassVar[str] = "{quantity}_out"
    output_help: ClassVar[str] = ("quantity of the output topic (same device prefix); "
                                  "{quantity} is the input's")

    def __init_subclass__(cls, **kw: Any) -> None:
        """Class-level ``produces`` from the default output: the sample configuration and
        the worker pool read it from the class, before any instance exists."""
        super().__init_subclass__(**kw)
        if "produces" not in cls.__dict__:
            cls.produces = ("{device}." + cls.output_default,)

    @classmethod
    def declared_options(cls) -> tuple[Option, ...]:
        """The endpoint base options, then ``output`` with this kind's default, then the
        kind's own options (which may redeclare ``output`` to change its help)."""
        output = Option("output", str, cls.output_default, cls.output_help)
        return merge_options(cls.base_options, (output,), cls.options)

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        key, template = self.output_option()
        self.output_template = check_output(key, template, self.output_default)
        #: for the graph: what this instance really publishes
        self.produces = ("{device}." + self.output_template,)
        #: items not processed because nothing (transitively) uses their output
        self.skipped = 0
        self.own_outputs_ignored = 0  # see demanded(): never re-process our own output
        # input topic -> output topic; topics are few and long-lived, so never pruned.  Read
        # from other endpoints' threads through wants(): a racing insert stores the same value.
        self._out: dict[str, str] = {}

    def counters(self) -> dict[str, int | float]:
        """What laziness saved; a processing kind adds its own with ``super().counters()``."""
        return {"skipped": self.skipped, "own_outputs_ignored": self.own_outputs_ignored}

    def output_option(self) -> tuple[str, str]:
        """(option name, output template) as configured.  A kind that once spelled its
        output differently overrides this to keep the old option working."""
        return "output", self.settings.output

    def out_topic(self, topic: str) -> str:
        """The topic the output derived from an input on ``topic`` is published on."""
        out = self._out.get(topic)
        if out is None:
            out = self._out[topic] = derive_topic(topic, self.output_template)
        return out

    def wants(self, topic: str) -> bool:
        """Lazy-chain capability (``Broker.has_demand``): ``topic`` is worth sending here only
        if something uses the output derived from it, itself transitively."""
        return self.has_subscribers(self.out_topic(topic))

    def demanded(self, batch: Sequence[Measurement]) -> list[Measurement]:
        """The items of ``batch`` whose output is used, in order; the rest count as skipped.

        Why: the whole point of laziness is to spend nothing on data nobody uses, not even
        validation.  Demand is looked up once per distinct output topic per batch, so it is
        consistent within a batch and cheap for thousands of items on a few topics.
        """
        by_input: dict[str, bool] = {}
        by_output: dict[str, bool] = {}
        keep: list[Measurement] = []
        name = self.name
        for m in batch:
            if m.source == name:
                # our own output came back (a subscription that covers it, e.g. the device's
                # whole subtree): processing it again would feed itself without end
                self.own_outputs_ignored += 1
                continue
            wanted = by_input.get(m.topic)
            if wanted is None:
                out = self.out_topic(m.topic)
                wanted = by_output.get(out)
                if wanted is None:
                    wanted = by_output[out] = self.has_subscribers(out)
                by_input[m.topic] = wanted
            if wanted:
                keep.append(m)
        self.skipped += len(batch) - len(keep)
        return keep
