"""Schema migrations, applied in one transaction each and recorded in `PRAGMA user_version`.

Never edit a migration that has shipped: add the next one. Tests open databases written by every
earlier version (tests/fixtures) and migrate them.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    -- Envelopes waiting to travel toward an uplink. One row per envelope; a batch covers seq..seq+n_items-1.
    CREATE TABLE outbox (
        origin INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        n_items INTEGER NOT NULL DEFAULT 1,
        kind TEXT NOT NULL,
        priority INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        age_base INTEGER NOT NULL,      -- age in seconds when stored, plus dwell accounted so far
        stored_mono REAL NOT NULL,      -- monotonic clock of `session` when age_base was last settled
        session TEXT NOT NULL,
        local INTEGER NOT NULL DEFAULT 0,  -- originated at this hub (not relayed)
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,  -- monotonic time of `session`
        expires_at_age INTEGER NOT NULL,        -- drop when the envelope is older than this
        published INTEGER NOT NULL DEFAULT 0,   -- handed to this hub's uplink with a PUBACK
        handed_to INTEGER NOT NULL DEFAULT 0,   -- node that took custody (kept to recognise retransmissions)
        PRIMARY KEY (origin, seq)
    );
    CREATE INDEX outbox_order ON outbox (handed_to, priority DESC, seq);
    -- Every report id ever accepted (dedup across restarts); pruned below the replay window.
    CREATE TABLE seen (origin INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (origin, seq)) WITHOUT ROWID;
    -- Report ids known to have reached HQ (custody), and whether we have told the mesh.
    CREATE TABLE delivered (
        origin INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        notified INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID;
    -- Reports from field teams (never the clear text of a sealed report).
    CREATE TABLE inbound (
        origin INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        from_node INTEGER NOT NULL,
        language TEXT NOT NULL,
        kind TEXT NOT NULL,
        verified INTEGER NOT NULL,
        received_day TEXT NOT NULL,
        delivered_notified INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (origin, seq)
    );
    -- Next sequence number per origin this hub signs for; allocated in the same transaction as the outbox row.
    CREATE TABLE seq_counter (origin INTEGER PRIMARY KEY, next_seq INTEGER NOT NULL);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    """,
    # 2: the last warnings and errors, kept across restarts for `meshd status` (meshd.store.health), so a
    # technician can see why a hub restarted, even while it is down. Bounded to the newest few dozen rows;
    # a repeated message updates its row in place. Only log text, which never holds secrets or sealed content.
    """
    CREATE TABLE error_log (
        key TEXT PRIMARY KEY,          -- random id of the entry, so repeats update it in place
        boot TEXT NOT NULL,            -- kernel boot id: `mono` compares only with clocks of the same boot
        mono REAL NOT NULL,            -- CLOCK_MONOTONIC at the latest occurrence (never the wall clock)
        level TEXT NOT NULL,           -- WARNING, ERROR, CRITICAL
        logger TEXT NOT NULL,
        message TEXT NOT NULL,
        repeats INTEGER NOT NULL DEFAULT 1
    );
    """,
    # 3: the node each carried envelope came from (0 = originated here), for hop-by-hop custody routing.
    # Added to migration 1 at first, which would have broken every store written before: a store already
    # at version 1 never runs migration 1 again. Rows from before get 0 ("unknown / ours").
    """
    ALTER TABLE outbox ADD COLUMN from_node INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the uplink's JSON of each report's body (codec.uplink_bodies), rendered when the envelope is stored
    # so that a short satellite window is spent publishing, not decoding. NULL: rendered at publish time
    # (rows from before, and envelopes without reports). A release that changes the JSON mapping of bodies
    # must add a migration that sets this column to NULL.
    """
    ALTER TABLE outbox ADD COLUMN uplink_bodies TEXT;
    """,
    # 5: the neighbour each delivered id's news goes back to (the node we got the report from), so it travels
    # in a short frame under the link key shared with that hub. 0: unknown (rows from before, and our own
    # reports sent without a custody notice back): the signed broadcast Delivered notice, as before.
    """
    ALTER TABLE delivered ADD COLUMN tell_node INTEGER NOT NULL DEFAULT 0;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
