"""The alert lifecycle before publication: submissions waiting for approval, and drafts.

Both live in the replicated pending bucket, outside the alert stream: a submission holds no
alert identity there, so an approved alert is published through the same accept path as
any other (docs/lifecycle.md).
"""
