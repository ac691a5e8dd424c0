"""Routes a routing hands the engine's trusted bulk registration (Routing.csr): checked once,
as they are learned, to cross no link twice, and given as the interned paths' CSR."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.model.comm.shared import Routing, _check_routes


def test_routing_refuses_a_route_crossing_a_link_twice() -> None:
    _check_routes([(0, 1), (2,), ()])
    with pytest.raises(ValueError, match=r"route \(1, 4, 1\) crosses a link twice"):
        _check_routes([(3,), (1, 4, 1)])


def test_routing_csr_gives_interned_paths() -> None:
    r = Routing({})
    assert r._intern([(0, 1), (2,), (0, 1)]) == [0, 1, 0]
    flat, lengths = r.csr(np.array([1, 0]))
    assert flat.tolist() == [2, 0, 1] and lengths.tolist() == [1, 2]
