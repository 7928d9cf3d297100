"""Evidence that nothing is lost, nothing private leaks and bad input gets a clear answer.

The case tables live here, in the package, so the tests and ``telemetry-pipeline
reliability-report`` (which writes docs/RELIABILITY.md) run the very same cases:

- ``faults``: the fault matrix, against real servers on loopback (``loopback``), and through the sensor;
- ``bad_input``: broken databases, configuration files and settings, each with its expected answer;
- ``privacy``: random installations checked against an oracle written from the contract;
- ``leaks``: end-to-end runs searched for the phone-home key, and the modes of the files they write;
- ``report``: runs them all and renders the figures.
"""
