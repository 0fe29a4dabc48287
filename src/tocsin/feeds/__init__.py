"""The public CAP Atom feeds (docs/feeds.md): which alerts they show, and their bytes.

    window.py  the follower's active alerts -> the public Actual alerts of the feed window,
               kept until the window after they expired or were superseded (bounded, and
               recorded in the data directory so that a restart keeps the expired ones)
    atom.py    entries -> one Atom (RFC 4287) document under the byte bound, oldest dropped
    areas.py   which entries a gazetteer area's feed shows (geocode or cells that overlap)

api/feeds.py serves them, each rendered once per change of the window and cached with its ETag.
"""
