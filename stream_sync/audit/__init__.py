"""The audit trail: who did what to which channel or key, from where, and when.

Entries are written in the same transaction as the change they describe
(`add_entry` never commits), so a change and its audit row land together or not
at all. They name key ids, never keys.
"""

from .entries import Actor, AuditAction, AuditView, add_entry, list_entries

__all__ = ["Actor", "AuditAction", "AuditView", "add_entry", "list_entries"]
