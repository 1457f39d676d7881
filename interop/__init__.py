"""Interop with QUIC stacks nobody here wrote: the QUIC interop runner's cases, run here.

``python -m interop`` (or ``nox -s interop``) runs each case of
:data:`interop.spec.CASES` with sansquic as the hq-interop client against a
peer's server and with the peer's client against sansquic's server, through
a loopback impairment proxy (:mod:`interop.proxy`) that also watches the
wire (:mod:`interop.wire`), and prints a case x peer x direction matrix.
See docs/interop.md.
"""
