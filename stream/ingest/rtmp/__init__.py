"""RTMP ingest: OBS or FFmpeg publish to `rtmp://HOST:PORT/live/<publish token>` (app `backup` for
the backup role), and a wrong key is refused before any media is accepted.

Why a gatekeeper proxy: PyAV's FFmpeg has an RTMP server (`listen=1`) that interoperates with OBS,
FFmpeg and hardware encoders, but it accepts any application and stream name. So the public port is
ours: an asyncio server that, per connection, answers the handshake, reads the publisher's side
(`PublishGate`) until its `publish` command, and once `connect` is valid starts FFmpeg's listener
on an ephemeral loopback port (`RtmpDemuxer`, one worker thread) and relays bytes both ways:

- the proxy answers the handshake exactly as FFmpeg's listener does (S1: C1's epoch, a zero version,
  random bytes; S2: C1 echoed; C2 not checked; no digests, which publishers then do not check
  either), and plays the client's side with FFmpeg itself. C0's version byte is checked, so RTMPE,
  RTMPS (TLS) and stray HTTP are refused at once, and a client that never sends a valid `connect`
  never costs a thread;
- RTMP chunks are parsed exactly as FFmpeg's reader parses them (basic header, message header
  types 0-3, extended timestamp, Set Chunk Size), so both sides always agree on message boundaries;
- protocol control messages pass; command messages are held until complete, decoded (AMF0), and
  forwarded only if valid: `connect` must name the app `live` or `backup`, and `releaseStream`,
  `FCPublish` and `publish` must name the publish token. Anything else before `publish` (media,
  metadata, `play`, oversized messages, a slow client) closes the connection;
- when `publish` is valid, the program slot is claimed *before* the command reaches FFmpeg, so a
  refused publisher (wrong key, busy slot) never gets a single media byte to the decoder. From then
  on the proxy only copies bytes.

Every refusal of a publisher is one WARNING line with the remote address (never the presented key)
and a count in INGEST_REJECTED{protocol="rtmp"}; what a flood repeats (evictions: INFO; connections
closed at once: DEBUG) is counted the same way but logged lower, so knocking cannot flood the log.
The thread decodes with PyAV and pushes frames into the `ProgramInput` as they arrive: RTMP
publishers send in real time.

Hostile clients (issue #12): nobody can keep a real publisher out, make us hold memory, or starve
the event loop. All of it rests on how little a real OBS or FFmpeg needs before `publish`: the
handshake, then ~450 bytes (five small commands) in ~5 reads and a few round trips, well under a
second.

- *Pending* sessions (not publishing yet) are accounted apart; publishing ones are never evicted
  and need no cap (the program's slots allow one primary and one backup). At most
  MAX_PENDING_PER_ADDRESS pending sessions per address and MAX_PENDING in all: a newcomer that
  finds no room evicts one (INGEST_REJECTED `busy`), taken from the address holding the most, and
  there silent sessions (no C0/C1 yet) before spoken ones, then the one heard from least recently.
  So idle and stalled connections go first and a publisher that is talking goes last; ranking
  silent ones first matters because a burst of new connections, each "heard" at its accept, would
  otherwise outrank a publisher waiting one round trip for an answer. A session that presents the
  right key (releaseStream does, before publish) is the operator's encoder and leaves the pool.
- New connections per address are rate-limited (`PublisherAccess.over_rate`, a token bucket): beyond
  it a connection is closed at once, takes nobody's place and starts nothing, so a reconnecting
  flood cannot churn the pool (measured: ~2,400 evictions/s from 113 addresses without it).
  "Address" here is an IPv4 address or an IPv6 /64, what one subscriber is given.
- Deadlines from the accept: the handshake (C0, C1, C2) within HANDSHAKE_DEADLINE, `publish`
  within PUBLISH_DEADLINE: a pending session lives a few seconds even when nobody evicts it.
- One budget bounds everything held before `publish`: PREPUBLISH_BYTES read after the handshake
  (30x what FFmpeg sends), so the parse buffer, the chunks held behind a half-sent command and the
  messages being reassembled cannot outgrow it; over it the client is refused (`bad_request`).
  With what the stream reader may hold (its `limit`, plus one socket read), a pending session
  holds a few hundred KB at most, and there are at most MAX_PENDING of them.
- Parsing work per client is bounded too: at most PREPUBLISH_BYTES and MAX_NEGOTIATION_READS reads
  per connection, chunk sizes below the protocol default of 128 (which no publisher lowers) refused
  so that a byte never costs a chunk header, and at most NEGOTIATION_READ_SIZE bytes parsed per turn
  of the event loop, handed back between reads so HTTP and the other sessions are served between.
- Wrong keys (or applications) go to the application's process-wide memory of failed credentials
  (`PublisherAccess`), keyed by the client's IP address like every credential check: each is
  answered after its delay, FFmpeg's side already
  closed (the client holds only a socket), and an address that keeps failing is locked out: its
  connections are closed at once, before a thread is started, and keys presented on connections it
  opened before are refused without being compared (AUTH_LOCKED_OUT, INGEST_REJECTED `bad_key`).
  One WARNING when an address becomes locked out.

One module per layer, as MediaMTX keeps them: `handshake`, `chunk` (the chunk stream), `amf0`,
`message` (type ids and commands), `gate` (the rules before `publish`), `demuxer` (FFmpeg's side)
and `server` (the port, its sessions and their caps). `PublisherAccess` (server.py) is how the
embedding application's key check, failure lockout and connection rate come in.
"""
