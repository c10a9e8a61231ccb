"""Field teams at the hub: text direct messages in, signed reports and receipts out; the handset roster."""

from meshd.field.desk import FieldDesk, SenderLimiter
from meshd.field.roster import Handset, Roster, RosterError

__all__ = ["FieldDesk", "Handset", "Roster", "RosterError", "SenderLimiter"]
