"""Reading a frozen payload back, as the checks do: are its keys exactly the contract's, and
which users carry an email key.

A large installation's night is tens of megabytes of JSON, a year of nights thirteen gigabytes;
parsing each into Python objects takes longer than building it. So a payload is first matched
whole against the contract's grammar in its compact form (RE2, linear time, no objects built):
a payload that matches has exactly the contract's keys in the contract's order, every value a
JSON scalar, and its users' ids and email keys can be read straight off its text. Anything else
(another spacing, a missing or extra key, a nested value) is parsed with json and judged by
``payload_key_problems``, exactly as before, so the fast path can only ever say "fine" when the
slow one would.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.rules.payload import (
    CODE_REVIEW_KEYS,
    COMPANY_KEYS,
    PAYLOAD_KEYS,
    TEAM_KEYS,
    USER_KEYS,
    payload_key_problems,
)

_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_SCALAR = f"(?:{_STRING}|{_NUMBER}|true|false|null)"


def _object(keys: tuple[str, ...], optional: tuple[str, ...] = (), strings: tuple[str, ...] = ()) -> str:
    """An object with exactly ``keys`` in order (``optional`` ones may be missing), each a JSON
    scalar, a string for those in ``strings``."""
    fields = []
    for index, key in enumerate(keys):
        field = f'{"," if index else ""}"{key}":{_STRING if key in strings else _SCALAR}'
        fields.append(f"(?:{field})?" if key in optional else field)
    return r"\{" + "".join(fields) + r"\}"


def _list(item: str) -> str:
    return rf"\[(?:{item}(?:,{item})*)?\]"


_SECTIONS = {"integrations": _list(_SCALAR), "companies": _list(_object(COMPANY_KEYS)),
             "teams": _list(_object(TEAM_KEYS)),
             "users": _list(_object(USER_KEYS, optional=("email",), strings=("id",))),
             "codeReviews": _list(_object(CODE_REVIEW_KEYS))}
COMPACT_PAYLOAD = "^" + r"\{" + ",".join(
    f'"{key}":{_SECTIONS.get(key, _SCALAR)}' for key in PAYLOAD_KEYS) + r"\}$"


@dataclass(frozen=True)
class PayloadScan:
    key_problems: list[str]
    emailed_user_ids: pa.Array  # string: users whose object has an email key, in payload order


def scan_payload(payload: bytes | pa.Buffer) -> PayloadScan:
    """The payload's key problems (none when it is exactly the contract's) and its emailed users.

    ``payload`` may be an Arrow buffer (the summary column's own memory): a large night's payload
    is read where it lies, not copied."""
    buffer = pa.py_buffer(payload)
    # The emailed users are read off the text while it is matched (both release the GIL); they
    # are used only if the payload matches, which makes reading them that way sound. On a payload
    # that does not match, that reading may fail: its error is left in the future, unread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        emailed = pool.submit(_emailed_users_of_compact, buffer)
        if pc.match_substring_regex(_as_string_array(buffer), COMPACT_PAYLOAD)[0].as_py():
            return PayloadScan([], emailed.result())
    try:
        document = json.loads(buffer.to_pybytes())
    except ValueError as error:
        return PayloadScan([f"the payload is not JSON: {error}"], pa.array([], pa.string()))
    users = document.get("users") if isinstance(document, dict) else None
    ids = [u.get("id") for u in users if isinstance(u, dict) and "email" in u] if isinstance(users, list) else []
    # An id that is not a string still names a user carrying an email: kept, as its JSON text.
    return PayloadScan(payload_key_problems(document),
                       pa.array([i if isinstance(i, str) else json.dumps(i) for i in ids], pa.string()))


def _as_string_array(data: pa.Buffer) -> pa.StringArray:
    return pa.StringArray.from_buffers(1, pa.py_buffer(np.array([0, data.size], dtype=np.int32)), data)


def _emailed_users_of_compact(payload: pa.Buffer) -> pa.Array:
    """In a payload matching COMPACT_PAYLOAD, the users whose object has an email key.

    Texts holding a quote after another character than a backslash cannot be inside a string
    value, so they are found by their bytes alone: each user object starts ``{"id":`` and
    ``},{"id":`` separates two of them; ``,"email":`` can only be an email key, which comes right
    after the object's id, a string (the grammar says so). All of it is searched with numpy,
    outside the GIL's way, a megabyte at a time."""
    data = np.frombuffer(payload, dtype=np.uint8)
    start = _first(data, _USERS_START) + len(_USERS_START)
    end = _last(data, _USERS_END)  # the last key: near the end
    section = data[start:end]
    if len(section) == 0:
        return pa.array([], pa.string())
    emails = _occurrences(section, _EMAIL_KEY)
    if len(emails) == 0:
        return pa.array([], pa.string())
    heads = np.concatenate([[len(b'{"id":')], _occurrences(section, _NEXT_USER) + len(_NEXT_USER)])
    # Each email key's object, and that object's id between its quotes: values 0, 2, 4, ... of a
    # string array whose odd values are the text between them.
    owners = np.searchsorted(heads, emails, side="right") - 1
    bounds = np.empty(2 * len(emails), dtype=np.int64)
    bounds[0::2], bounds[1::2] = heads[owners] + 1, emails - 1
    pieces = pa.StringArray.from_buffers(len(bounds) - 1, pa.py_buffer(bounds.astype(np.int32)),
                                         pa.py_buffer(section))
    ids = pieces.take(pa.array(np.arange(0, len(bounds), 2)))
    if pc.any(pc.match_substring(ids, "\\")).as_py():  # rare: an id with an escape in it, decoded by json
        return pa.array([json.loads(f'"{i}"') for i in ids.to_pylist()], pa.string())
    return ids


_USERS_START, _USERS_END = b',"users":[', b'],"codeReviews":['
_NEXT_USER, _EMAIL_KEY = b'},{"id":', b',"email":'


def _first(data: np.ndarray, pattern: bytes) -> int:
    found = _occurrences(data, pattern, stop_at_first=True)
    return int(found[0]) if len(found) else -1


def _last(data: np.ndarray, pattern: bytes) -> int:
    for chunk_end in range(len(data), 0, -_CHUNK):
        chunk_start = max(0, chunk_end - _CHUNK - len(pattern) + 1)
        found = _occurrences(data[chunk_start:chunk_end], pattern)
        if len(found):
            return chunk_start + int(found[-1])
    return -1


_CHUNK = 1 << 20


def _occurrences(data: np.ndarray, pattern: bytes, *, stop_at_first: bool = False) -> np.ndarray:
    """Offsets of every occurrence of ``pattern`` in ``data``, a megabyte at a time: a mask of
    the whole 35 MB payload would be 35 MB of fresh memory."""
    pattern_bytes = np.frombuffer(pattern, dtype=np.uint8)
    found = []
    for chunk_start in range(0, max(len(data) - len(pattern) + 1, 0), _CHUNK):
        window = data[chunk_start:chunk_start + _CHUNK + len(pattern) - 1]  # an occurrence may straddle
        candidates = np.flatnonzero(window[:len(window) - len(pattern) + 1] == pattern_bytes[0])
        for offset in range(1, len(pattern)):
            candidates = candidates[window[candidates + offset] == pattern_bytes[offset]]
        found.append(candidates + chunk_start)
        if stop_at_first and len(candidates):
            break
    return np.concatenate(found) if found else np.array([], dtype=np.int64)
