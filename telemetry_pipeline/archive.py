"""The archive of what left the installation: every delivered request body, byte for byte,
with its SHA-256 and the receipt of each delivery (when, where, HTTP status, attempts).

Per night, in the archive folder (files mode 0600):

- ``<installationId>_<D>.json``: the body of the night's latest delivery exactly as it was
  posted, ``[`` + payload + ``]``;
- ``<installationId>_<D>.receipt.json``: every delivery of the night, oldest first;
- ``<installationId>_<D>.<sha256[:16]>.json``: an earlier body, kept when the night was later
  sent again with other bytes (a rebuilt night), so that every body that left stays provable.

The phone-home key is never written here: a receipt names the collector by its URL without
any user:password part.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from telemetry_pipeline.delivery import Delivery, display_url, idempotency_key, outbox_path
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.files import write_durably
from telemetry_pipeline.rules.payload import sha256_hex

RECEIPT_SUFFIX = ".receipt.json"


def request_body(payload: bytes | memoryview) -> bytes:
    """The body ``delivery.post_payload`` sends for ``payload``: a JSON array holding it."""
    return b"[" + payload + b"]"


def iso_now() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class ArchivedNight:
    """One night's entry in an archive folder: its receipt and the body files beside it."""

    folder: Path
    installation_id: str
    night: str
    deliveries: list[dict]  # oldest first

    @property
    def latest(self) -> dict:
        return self.deliveries[-1]

    @property
    def body_path(self) -> Path:
        return self.folder / self.latest["bodyFile"]

    @property
    def receipt_path(self) -> Path:
        return receipt_path(self.folder, self.installation_id, self.night)

    def problems(self) -> list[str]:
        """Every body file that is missing or no longer holds the bytes its receipt records."""
        found = []
        for delivery in self.deliveries:
            path = self.folder / delivery["bodyFile"]
            try:
                actual = sha256_hex(path.read_bytes())
            except OSError:
                found.append(f"{path.name} is missing")
                continue
            if actual != delivery["bodySha256"]:
                found.append(f"{path.name} does not match the sha256 its receipt records")
        return sorted(set(found))


def receipt_path(folder: Path, installation_id: str, night: str) -> Path:
    body = outbox_path(folder, installation_id, night)  # checks the id can name a file
    return body.with_name(body.name[: -len(".json")] + RECEIPT_SUFFIX)


def record_delivery(
    folder: str | os.PathLike, installation_id: str, night: str, payload: bytes | memoryview, delivery: Delivery,
    sent_by: str, sent_at: str | None = None,
) -> ArchivedNight:
    """Keep the body that was just delivered and add its receipt; returns the night's entry."""
    folder = Path(folder)
    body = request_body(payload)
    body_path = outbox_path(folder, installation_id, night)
    entry = {
        "sentAt": sent_at or iso_now(),
        "sentBy": sent_by,
        "destination": display_url(delivery.destination),
        "httpStatus": delivery.status,
        "attempts": delivery.attempts,
        "bodyFile": body_path.name,
        "bodyBytes": len(body),
        "bodySha256": sha256_hex(body),
        "payloadBytes": len(payload),
        "payloadSha256": sha256_hex(payload),
    }
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        previous = read_night(folder, installation_id, night)
        deliveries = list(previous.deliveries) if previous else []
        if previous and previous.latest["bodySha256"] != entry["bodySha256"] and body_path.exists():
            # The night goes again with other bytes: the earlier body keeps its own name.
            kept = body_path.with_name(f"{body_path.name[:-len('.json')]}.{previous.latest['bodySha256'][:16]}.json")
            write_durably(kept, body_path.read_bytes(), prefix=".archive-")
            deliveries = [
                {**d, "bodyFile": kept.name} if d["bodyFile"] == body_path.name else d for d in deliveries
            ]
        write_durably(body_path, body, prefix=".archive-")
        receipt = {
            "installationId": installation_id,
            "night": night,
            "idempotencyKey": idempotency_key(installation_id, night),
            "deliveries": [*deliveries, entry],
        }
        write_durably(
            receipt_path(folder, installation_id, night),
            json.dumps(receipt, indent=2, ensure_ascii=False).encode("utf-8") + b"\n", prefix=".archive-",
        )
    except OSError as error:
        raise TelemetryError(f"archive {folder}: cannot write the receipt of night {night}: {error.strerror}") from None
    return ArchivedNight(folder, installation_id, night, receipt["deliveries"])


def read_night(folder: str | os.PathLike, installation_id: str, night: str) -> ArchivedNight | None:
    path = receipt_path(Path(folder), installation_id, night)
    return _read_receipt(path) if path.exists() else None


def read_archive(folder: str | os.PathLike) -> list[ArchivedNight]:
    """Every night recorded in ``folder``, by night then installation; a missing folder is empty."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    nights = [_read_receipt(path) for path in folder.glob(f"*{RECEIPT_SUFFIX}")]
    return sorted(nights, key=lambda n: (n.night, n.installation_id))


def _read_receipt(path: Path) -> ArchivedNight:
    try:
        receipt = json.loads(path.read_text(encoding="utf-8"))
        deliveries = receipt["deliveries"]
        if not deliveries or not all({"bodyFile", "bodySha256", "sentAt"} <= set(d) for d in deliveries):
            raise KeyError("deliveries")
        return ArchivedNight(path.parent, receipt["installationId"], receipt["night"], deliveries)
    except OSError as error:
        raise TelemetryError(f"archive receipt {path}: cannot be read: {error.strerror}") from None
    except (ValueError, KeyError, TypeError) as error:
        what = f"key {error.args[0]} missing or malformed" if isinstance(error, KeyError) else "not valid JSON"
        raise TelemetryError(f"archive receipt {path}: {what}") from None
