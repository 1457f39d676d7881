"""hq-interop against a peer built on aioquic's own asyncio API, on either side."""

import os

import pytest

import sansquic
from sansquic_conformance import HARNESSES, hq

from .interop_aioquic import AioquicPeer

FILES = {"/index.html": b"<h1>interop</h1>", "/blob": os.urandom(2_000_000)}


@pytest.mark.parametrize("runtime", list(HARNESSES))
def test_sansquic_client_fetches_from_an_aioquic_server(runtime: str) -> None:
    peer = AioquicPeer()
    try:
        address = peer.serve(FILES)
        conn = HARNESSES[runtime].connect(address, hq.CONFIG)
        try:
            for path, body in FILES.items():
                assert hq.get(conn, path) == body
            with pytest.raises(sansquic.StreamResetError) as info:
                hq.get(conn, "/nowhere")
            assert info.value.error_code == hq.NOT_FOUND
        finally:
            conn.close()
    finally:
        peer.close()


@pytest.mark.parametrize("runtime", list(HARNESSES))
def test_aioquic_client_fetches_from_a_sansquic_server(runtime: str) -> None:
    server = HARNESSES[runtime].serve(hq.serve_files(FILES), hq.CONFIG)
    peer = AioquicPeer()
    try:
        results = peer.fetch(server.address, [*FILES, "/nowhere"])
        assert results[:-1] == list(FILES.values())
        assert isinstance(results[-1], sansquic.StreamResetError)
        assert results[-1].error_code == hq.NOT_FOUND
    finally:
        peer.close()
        server.close()
