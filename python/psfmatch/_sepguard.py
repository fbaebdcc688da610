# SPDX-License-Identifier: BSD-3-Clause
"""`extract`: ``sep.extract`` whose own failures become psfmatch's (issue 20).

sep raises a bare `Exception` when an object splits into more sub-objects than its deblending
buffer holds ("object deblending overflow", e.g. around one absurdly bright pixel or a huge
saturated star) or when its pixel stack fills. The first is retried without deblending
(``deblend_cont=1.0``), which needs no sub-object buffer; only the positions and fluxes of the
sources psfmatch uses matter, not how a blend splits. Anything sep still cannot do is a
`PsfMatchError` that says what it was doing, never a traceback from the C library.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sep

from .errors import PsfMatchError


def extract(data: np.ndarray, thresh: float, *, what: str = "sources", **kwargs: Any) -> Any:
    """``sep.extract(data, thresh, **kwargs)``; on a deblending overflow again without
    deblending; `PsfMatchError` naming ``what`` if sep still fails."""
    try:
        return sep.extract(data, thresh, **kwargs)
    except Exception as err:  # sep raises bare Exceptions
        if "deblend" not in str(err) or kwargs.get("deblend_cont") == 1.0:
            raise PsfMatchError(
                f"sep could not detect the {what}: {err} (an image of {data.shape[1]} x "
                f"{data.shape[0]} pixels; are some pixels absurdly bright and not masked?)"
            ) from err
    try:
        return sep.extract(data, thresh, **{**kwargs, "deblend_cont": 1.0})
    except Exception as err:
        raise PsfMatchError(
            f"sep could not detect the {what}, even without deblending: {err}"
        ) from err
