"""How a correction ("false alert, disregard") is marked, so that every part knows one.

A correction is a CAP Cancel that references the false alert and whose infos carry the
parameter CORRECTION_PARAMETER = CORRECTION_VALUE. The marker is inside the signed CAP: a
device trusts it as much as the alert itself. A node delivers a correction to every device,
not only those in the area, and a device shows it only when it had shown the alert it
references (a device that moved away still hears that the alert was false).
"""

from __future__ import annotations

from tocsin.cap.model import Alert, MsgType

CORRECTION_PARAMETER = "tocsin:correction"
CORRECTION_VALUE = "false-alert"


def is_correction(alert: Alert) -> bool:
    return alert.msg_type is MsgType.CANCEL and any(
        p.value_name == CORRECTION_PARAMETER and p.value == CORRECTION_VALUE
        for info in alert.infos for p in info.parameters
    )
