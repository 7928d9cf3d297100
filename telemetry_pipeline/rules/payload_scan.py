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

A backfill's nights are scanned with a ``PayloadScanner``, which matches again only the users'
objects that are not byte for byte those of the payload before (a quarter of them on a large
installation's night): the same verdicts, for about half the work.
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
from telemetry_pipeline.rules.payload_columns import string_offsets  # Arrow's layout, nothing of the encoding

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


_USER = _object(USER_KEYS, optional=("email",), strings=("id",))
# A user's counts: the end of its object, from the first count's key.
_COUNTS_KEY = ',"codemarks":'
_USER_COUNTS = "".join(f',"{key}":{_SCALAR}' for key in USER_KEYS[USER_KEYS.index("codemarks"):]) + r"\}"
assert _USER.endswith(_USER_COUNTS) and _USER_COUNTS.startswith(_COUNTS_KEY)
_SECTIONS = {"integrations": _list(_SCALAR), "companies": _list(_object(COMPANY_KEYS)),
             "teams": _list(_object(TEAM_KEYS)), "users": _list(_USER),
             "codeReviews": _list(_object(CODE_REVIEW_KEYS))}
# The payload in three parts, split around its users' list: what comes before the list, the list,
# and what comes after it.
_USERS_AT = PAYLOAD_KEYS.index("users")
_BEFORE_USERS = r"\{" + ",".join(f'"{key}":{_SECTIONS.get(key, _SCALAR)}' for key in PAYLOAD_KEYS[:_USERS_AT])
_AFTER_USERS = "".join(f',"{key}":{_SECTIONS.get(key, _SCALAR)}' for key in PAYLOAD_KEYS[_USERS_AT + 1:]) + r"\}"
COMPACT_PAYLOAD = "^" + _BEFORE_USERS + ',"users":' + _SECTIONS["users"] + _AFTER_USERS + "$"


@dataclass(frozen=True)
class PayloadScan:
    key_problems: list[str]
    emailed_user_ids: pa.Array  # string: users whose object has an email key, in payload order


def scan_payload(payload: bytes | pa.Buffer) -> PayloadScan:
    """The payload's key problems (none when it is exactly the contract's) and its emailed users.

    ``payload`` may be an Arrow buffer (the summary column's own memory): a large night's payload
    is read where it lies, not copied."""
    return _scan_whole(pa.py_buffer(payload))[0]


class PayloadScanner:
    """``scan_payload`` night after night, as the summary checks a backfill.

    From one night to the next most users' objects are the same bytes: a user's JSON changes with
    the night's counts, and only a quarter of a large installation's users are active on a night.
    So once a payload has matched, the next one is matched in three parts (what comes before its
    users' list, the list, what comes after it), each user's object on its own, and an object that
    is byte for byte the one in the same place of the payload before, which matched, is not matched
    again. The parts match exactly when the whole does (``_users_if_matching`` says why); a payload
    that does not is judged by json, as ``scan_payload`` judges it. This reuse is the checks' own:
    it compares bytes it has matched itself, and trusts nothing of the encoder's.
    Not thread-safe: one night at a time, in order."""

    def __init__(self):
        self._users: _Users | None = None  # those of the last payload, when it matched

    def __call__(self, payload: bytes | pa.Buffer) -> PayloadScan:
        buffer = pa.py_buffer(payload)
        before, self._users = self._users, None
        if before is None:
            scan, self._users = _scan_whole(buffer)
            return scan
        self._users = _users_if_matching(buffer, before)
        if self._users is None:
            return _scan_by_json(buffer)
        return PayloadScan([], _ids(self._users.emailed))


@dataclass(frozen=True)
class _Users:
    """The users' list of a payload that matched COMPACT_PAYLOAD, one value a user."""

    texts: pa.StringArray  # each user's object, the first alone and every next one with the comma before it
    emailed: pa.Array  # string: each user's id as written (without its quotes) where it has an email key, else null
    # Each text's length up to its counts (``_COUNTS_KEY``, which it holds once); None until asked for.
    heads: np.ndarray | None = None

    def head_lengths(self) -> np.ndarray:
        if self.heads is None:
            object.__setattr__(self, "heads", _counts_at(self.texts))
        return self.heads


def _scan_whole(buffer: pa.Buffer) -> tuple[PayloadScan, _Users | None]:
    """The payload matched whole, and its users when it matches."""
    # The users are read off the text while it is matched (both release the GIL); they are used
    # only if the payload matches, which makes reading them that way sound. On a payload that does
    # not match, that reading may fail: its error is left in the future, unread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        users = pool.submit(_users_of_compact, buffer)
        if pc.match_substring_regex(_as_string_array(buffer), COMPACT_PAYLOAD)[0].as_py():
            matched = users.result()
            return PayloadScan([], _ids(matched.emailed)), matched
    return _scan_by_json(buffer), None


def _scan_by_json(buffer: pa.Buffer) -> PayloadScan:
    """A payload off the compact grammar, parsed and judged by ``payload_key_problems``."""
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


def _users_if_matching(buffer: pa.Buffer, before: _Users) -> _Users | None:
    """The payload's users when it matches COMPACT_PAYLOAD, else None; ``before`` are the users of
    a payload that matched.

    The parts match exactly when the whole does. If each does, so does their concatenation, which
    is the payload. If the whole matches, the parts are where they are taken from: ``,"users":[``,
    ``],"codeReviews":[`` and ``},{"id":`` hold a quote after another character than a backslash,
    so none of them can be inside a string value, and outside strings the grammar has each only
    where the split takes it (see ``_users_of_compact``)."""
    users = _user_texts(buffer)
    if users is None:
        return None
    opening, closing, texts = users
    before_users, after_users = buffer.slice(0, opening + 1 - len(_USERS_START)), buffer.slice(closing + 1)
    if not (pc.match_substring_regex(_as_string_array(before_users), f"^{_BEFORE_USERS}$")[0].as_py()
            and pc.match_substring_regex(_as_string_array(after_users), f"^{_AFTER_USERS}$")[0].as_py()):
        return None
    paired = min(len(texts), len(before.texts))
    same = np.zeros(len(texts), dtype=bool)
    same[:paired] = pc.equal(texts.slice(0, paired), before.texts.slice(0, paired)).to_numpy(zero_copy_only=False)
    # Most of the others are a user active on either night: only their counts need matching.
    changed = np.flatnonzero(~same[:paired])
    before_heads = before.head_lengths()
    if len(changed):
        same[changed] = _only_counts_changed(texts.take(pa.array(changed, pa.int64())),
                                             before.texts.take(pa.array(changed, pa.int64())),
                                             before_heads[changed])
    fresh = np.flatnonzero(~same)
    fresh_texts = texts.take(pa.array(fresh, pa.int64()))
    # The first user's object stands alone, every next one has the comma before it.
    first_is_fresh = len(fresh) > 0 and fresh[0] == 0
    if first_is_fresh and not pc.match_substring_regex(fresh_texts[0:1], f"^{_USER}$")[0].as_py():
        return None
    if not pc.all(pc.match_substring_regex(fresh_texts[int(first_is_fresh):], f"^,{_USER}$"), min_count=0).as_py():
        return None
    # Each user's emailed id: the night before's where the object is the same up to its counts,
    # else read anew.
    from_fresh = np.cumsum(~same) - 1 + paired
    emailed = pa.concat_arrays([before.emailed.slice(0, paired), _emailed_of(fresh_texts)]).take(
        pa.array(np.where(same, np.arange(len(texts)), from_fresh), pa.int64()))
    heads = np.empty(len(texts), dtype=np.int64)
    heads[:paired] = before_heads[:paired]  # where the text is the same up to its counts
    heads[fresh] = _counts_at(fresh_texts)
    return _Users(texts, emailed, heads)


def _only_counts_changed(texts: pa.StringArray, before: pa.StringArray, heads: np.ndarray) -> np.ndarray:
    """Per user text, paired with the text in the same place of a list that matched and the length
    of that one's head (what comes before its counts): True where the text is that head followed
    by counts that match the grammar, so that it matches as a whole.

    ``,"codemarks":`` holds a quote after a comma, so it cannot be inside a string value: in a text
    that matched it occurs once, as the counts' first key, and its head matched the grammar of a
    user's object up to there. A text made of that head, then what matches the rest of the grammar
    from that key on, matches the whole (and holds the key once, where its head ends)."""
    if texts.buffers()[2] is None:  # empty texts: not a user's
        return np.zeros(len(texts), dtype=bool)
    pieces = _cut(texts, np.minimum(heads, np.diff(string_offsets(texts))))
    # Heads are the even values, the rest the odd ones: one comparison of both, the heads' kept.
    same_head = np.flatnonzero(pc.equal(pieces, _cut(before, heads)).to_numpy(zero_copy_only=False)[0::2])
    matching = np.zeros(len(texts), dtype=bool)
    if len(same_head):  # the rest of those only (elsewhere the cut may fall inside a character)
        rests = pieces.take(pa.array(2 * same_head + 1, pa.int64()))
        matching[same_head] = pc.match_substring_regex(rests, f"^{_USER_COUNTS}$").to_numpy(zero_copy_only=False)
    return matching


def _cut(texts: pa.StringArray, at: np.ndarray) -> pa.StringArray:
    """Each text cut in two, ``at`` bytes from its start: the pieces in order, over the texts' bytes."""
    offsets = string_offsets(texts).astype(np.int64)
    cuts = np.empty(2 * len(texts) + 1, dtype=np.int64)
    cuts[0::2] = offsets
    cuts[1::2] = offsets[:-1] + at
    return pa.StringArray.from_buffers(2 * len(texts), pa.py_buffer(cuts.astype(np.int32)), texts.buffers()[2])


def _counts_at(texts: pa.StringArray) -> np.ndarray:
    """Where each text of a list that matched has its counts' key (the only place it can: once a text)."""
    if len(texts) == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = string_offsets(texts).astype(np.int64)
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)
    found = _occurrences(data[offsets[0]:offsets[-1]], _COUNTS_KEY.encode()) + offsets[0]
    if len(found) != len(texts) or np.any(np.searchsorted(offsets, found, side="right") - 1 != np.arange(len(texts))):
        # not a list that matched
        raise ValueError("the users' list is off the compact grammar")
    return found - offsets[:-1]


def _users_of_compact(buffer: pa.Buffer) -> _Users:
    """In a payload matching COMPACT_PAYLOAD, its users' list, one value a user.

    Texts holding a quote after another character than a backslash cannot be inside a string
    value, so they are found by their bytes alone: ``},{"id":`` separates two users' objects,
    and in an object that matched, ``,"email":`` can only be its email key, which comes right
    after the object's id, a string (the grammar says so). All of it is searched with numpy,
    outside the GIL's way, a megabyte at a time."""
    users = _user_texts(buffer)
    texts = users[2] if users is not None else pa.array([], pa.string())
    return _Users(texts, _emailed_of(texts))


def _user_texts(buffer: pa.Buffer) -> tuple[int, int, pa.StringArray] | None:
    """Where the users' list opens and closes (its brackets), and each user's text in between:
    the first user's object, then each next one with the comma before it. None when the payload
    has no users' list to split where the grammar puts it."""
    data = np.frombuffer(buffer, dtype=np.uint8)
    opening = _first(data, _USERS_START) + len(_USERS_START) - 1
    closing = _last(data, _USERS_END)
    if opening < len(_USERS_START) - 1 or closing < opening or closing - opening >= 2**31:
        return None
    inside = data[opening + 1:closing]
    ends = _occurrences(inside, _NEXT_USER) + 1 if len(inside) else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], ends, [len(inside)]] if len(inside) else [[0]]).astype(np.int32)
    return opening, closing, pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets),
                                                         buffer.slice(opening + 1, len(inside)))


def _emailed_of(texts: pa.StringArray) -> pa.Array:
    """Per user text of a list that matched, the user's id as written (between its quotes) where
    its object has an email key; null where it has none."""
    if len(texts) == 0 or texts.buffers()[2] is None:
        return pa.nulls(len(texts), pa.string())
    offsets = string_offsets(texts).astype(np.int64)
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)
    emails = _occurrences(data[offsets[0]:offsets[-1]], _EMAIL_KEY) + offsets[0]
    if len(emails) == 0:
        return pa.nulls(len(texts), pa.string())
    owners = np.searchsorted(offsets, emails, side="right") - 1
    # The id's opening quote: after '{"id":', and the comma before it but for the list's first user.
    id_starts = offsets[owners] + len(b'{"id":"') + (data[offsets[owners]] == ord(","))
    # Each id, and the text after it: values 0, 2, 4, ... of a string array whose odd values are
    # the text between them.
    bounds = np.empty(2 * len(emails), dtype=np.int64)
    bounds[0::2], bounds[1::2] = id_starts, emails - 1
    if np.any(np.diff(bounds) < 0):  # not a list that matched (read beside the match): no slices past their ends
        raise ValueError("the users' list is off the compact grammar")
    pieces = pa.StringArray.from_buffers(len(bounds) - 1, pa.py_buffer(bounds.astype(np.int32)),
                                         texts.buffers()[2])
    where = np.full(len(texts), -1, dtype=np.int64)
    where[owners] = np.arange(0, len(bounds), 2)
    return pieces.take(pa.array(where, pa.int64(), mask=where < 0))


def _ids(emailed: pa.Array) -> pa.Array:
    """The emailed users' ids, in payload order, as json reads them."""
    ids = pc.drop_null(emailed)
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
