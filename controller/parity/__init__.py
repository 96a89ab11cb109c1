"""The tap-compare comparator (issue 5): Envoy mirrors a share of the route's requests here;
each is sent to the baseline (primary), optionally a second baseline replica (secondary) and
the candidate, and the replies are compared.

The pure core (no I/O, no clock):

- :mod:`~controller.parity.rules`: the policy's compare rules compiled (JSON Pointer patterns);
- :mod:`~controller.parity.diff`: :class:`Reply` and ``differences()``, the field paths where
  two replies differ;
- :mod:`~controller.parity.noise`: :class:`NoiseModel`, differences the baseline has with
  itself (Diffy's rule);
- :mod:`~controller.parity.classify`: one request's outcome (matched, noisy, mismatched);
- :mod:`~controller.parity.tally`: per-route counts, per-path counts, windows, samples;
- :mod:`~controller.parity.samples`: mismatch samples with headers redacted.
"""
