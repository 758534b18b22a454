//! Home timelines in Redis (docs/adr/0003-home-timelines.md): each active reader's feed,
//! kept as posts are created and follows change, so that `ListHomeFeed` reads memory
//! instead of merging every followed account's posts in MongoDB.
//!
//! Per reader `R` (keys hash-tagged `{R}`, so they live together in a Redis Cluster):
//! - `home:{R}`: a sorted set of `<sort key, 19 digits>:<post id>:<author id>`, all with
//!   score 0, so that their lexical order is the sort-key order (a 63-bit key does not
//!   fit a score's 53-bit mantissa); at most `HOME_TIMELINE_LENGTH` (the newest);
//! - `home:{R}:floor`: the timeline holds every post it should above this key (19
//!   digits; the trimmed ones and older ones are read from MongoDB), or `building`;
//!   without it `R` has no timeline;
//! - `home:{R}:follows` and `home:{R}:muted`: whom `R` follows, and mutes until when
//!   (ms), from the social-graph service: entries are filtered by them as they are read,
//!   so an unfollow, a mute or its end shows without touching the sorted set;
//! - `home:{R}:gen`: moves with each change of those sets; a rebuild or an update that
//!   read the social graph before another change stores nothing and reads again;
//! - `home:{R}:lease`: the one rebuild under way.
//!
//! Each part but the floor holds a sentinel `~` from the build: Redis may evict one key
//! of a reader and not the others, and a timeline that lost a part is dropped and built
//! again rather than read wrong. The floor expires a day after the build whatever the
//! reads (the others live while read), so whatever Redis lost or a failover took back
//! is right again within a day.
//!
//! Writes: a consumer pushes each new post to its author's followers' timelines (only to
//! those that exist), unless the author has more than `HOME_FANOUT_MAX_FOLLOWERS`
//! followers: such an author is recorded in `pulled_authors` (MongoDB; never taken
//! back), its posts are pulled from MongoDB at read time and its entries ignored. A
//! follow, unfollow, mute or unmute makes the timeline ask the social graph how the two
//! stand now (so that order and redelivery do not matter) and record it; a follow also
//! adds the followee's recent posts, an unfollow takes them out. Deleted posts are left where they are
//! and taken out by the first read that finds them gone. A reader without a timeline is
//! answered from MongoDB while one is built; a timeline unread for
//! `HOME_TIMELINE_IDLE_SECS` expires.
//!
//! Everything here can be lost: a missing or unreachable timeline is answered from
//! MongoDB (the pull of ADR 0001), and a write that fails (Redis down) fails its event,
//! which the consumer retries until Redis is back.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use bson::{DateTime, Document, doc, oid::ObjectId};
use mongodb::Collection;
use social_events::{Envelope, Payload, removed_users};
use social_kit::{
    Error, Result,
    cache::Redis,
    client::Peer,
    config::ConfigError,
    mongo,
    paging::PageRequest,
    time::{millis, ms, now_ms},
};
use social_proto::graph::v1::{
    ListFollowerIdsRequest, ListFollowingIdsRequest,
    social_graph_service_client::SocialGraphServiceClient,
};
use tokio_util::sync::CancellationToken;

use crate::store::{PostDoc, Store};

/// Authors whose posts are pulled rather than pushed.
pub const PULLED_AUTHORS: &str = "pulled_authors";

/// How long a rebuild may take before another may start.
const BUILD_LEASE: Duration = Duration::from_secs(30);
/// Entries read beyond a page, for those whose post was deleted meanwhile.
const SLACK: usize = 4;
/// Entries a read looks at, per entry it wants, before it leaves the page to MongoDB
/// (entries of unfollowed or muted accounts are passed over).
const SCAN_FACTOR: usize = 4;
/// Ends of mutes "until unmuted" (ms): far beyond any clock.
const FOREVER_MS: i64 = 9_000_000_000_000_000;
/// Tries of a resync or rebuild that found the follows changed under it.
const TRIES: usize = 5;
/// How often the authors pulled are read again (others' fan-outs may add some).
const PULLED_REFRESH: Duration = Duration::from_secs(30);
/// Followers pushed to in one round trip (well within a command's 100 ms).
const PUSH_BATCH: usize = 200;
/// How long a built timeline is read before it is built again from MongoDB (whatever
/// Redis lost or a failover took back meanwhile is then right again).
const REBUILT_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The longest timeline, and the largest fan-out (what ListFollowerIds answers at most).
const MAX_LENGTH: usize = 10_000;
const MAX_FOLLOWERS: usize = 50_000;

/// How timelines are kept.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HOME_TIMELINE_LENGTH` (400): the newest entries kept per reader; 0 turns home
    /// timelines off (every feed read merges in MongoDB).
    pub length: usize,
    /// `HOME_TIMELINE_IDLE_SECS` (7 days): a timeline unread this long expires.
    pub idle: Duration,
    /// `HOME_FANOUT_MAX_FOLLOWERS` (10000): an author with more followers is pulled at
    /// read time instead of pushed.
    pub max_followers: usize,
}

impl Settings {
    pub fn from_env() -> std::result::Result<Self, ConfigError> {
        let settings = Self {
            length: social_kit::config::parse_or("HOME_TIMELINE_LENGTH", 400)?,
            idle: social_kit::config::seconds_or("HOME_TIMELINE_IDLE_SECS", 7 * 24 * 3600)?,
            max_followers: social_kit::config::at_least_one_or(
                "HOME_FANOUT_MAX_FOLLOWERS",
                10_000,
            )?,
        };
        let out_of = |var: &str, value: usize, range: &str| ConfigError {
            var: var.into(),
            value: value.to_string(),
            reason: format!("must be {range}"),
        };
        if settings.length > MAX_LENGTH {
            return Err(out_of("HOME_TIMELINE_LENGTH", settings.length, "at most 10000"));
        }
        if settings.max_followers > MAX_FOLLOWERS {
            let max = settings.max_followers;
            return Err(out_of("HOME_FANOUT_MAX_FOLLOWERS", max, "1 to 50000"));
        }
        Ok(settings)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self { length: 400, idle: Duration::from_secs(7 * 24 * 3600), max_followers: 10_000 }
    }
}

/// `trim(zset, length, floor)`: drops the oldest entries beyond `length` (the
/// sentinel, above them all, aside) and answers the new floor (the highest key dropped,
/// if above `floor`). `intact(keys)`: whether a built timeline (`KEYS` entries, floor,
/// follows, muted, gen) still has all its parts, each of which holds a sentinel `~`
/// from its build: Redis may evict one key of a reader and not the others, and a
/// timeline missing its follows or entries would answer wrong; one that is not intact
/// is forgotten (`forget`), to be built again.
const HELPERS: &str = r"
local function intact(keys)
  return redis.call('EXISTS', keys[1], keys[3], keys[4], keys[5]) == 4
end
local function forget(keys)
  redis.call('DEL', keys[1], keys[2], keys[3], keys[4], keys[5])
end
local function trim(zset, length, floor)
  local n = redis.call('ZCARD', zset) - 1
  if n <= length then return floor end
  local gone = redis.call('ZRANGE', zset, 0, n - length - 1)
  redis.call('ZREMRANGEBYRANK', zset, 0, n - length - 1)
  local top = string.sub(gone[#gone], 1, 19)
  if top > floor then return top end
  return floor
end
";

/// Adds entry `ARGV[1]` to timeline `KEYS` (entries, floor, follows, muted, gen) if the
/// timeline exists (or is being built) and the entry is above its floor; keeps `ARGV[2]`
/// entries.
const PUSH: &str = r"
local floor = redis.call('GET', KEYS[2])
if not floor then return 0 end
if floor == 'building' then
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
else
  if not intact(KEYS) then
    forget(KEYS)
    return 0
  end
  if string.sub(ARGV[1], 1, 19) <= floor then return 0 end
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
  local new = trim(KEYS[1], tonumber(ARGV[2]), floor)
  if new ~= floor then redis.call('SET', KEYS[2], new, 'KEEPTTL') end
end
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
";

/// Reads timeline `KEYS[1..5]` (entries, floor, follows, muted, gen) of reader
/// `ARGV[1]` below `ARGV[2]` (a lexical bound): up to `ARGV[3]` entries whose author the
/// reader follows and does not mute at `ARGV[6]` (ms), looking at most at `ARGV[4]`;
/// keeps the timeline `ARGV[5]` ms more. Answers `missing`, `building`, or `ok`, the
/// floor, whether it reached the floor, the key of the last entry looked at, the count
/// of entries, the entries, then those of `ARGV[7..]` the reader follows unmuted.
const READ: &str = r"
local floor = redis.call('GET', KEYS[2])
if not floor then return {'missing'} end
if floor == 'building' then return {'building'} end
if not intact(KEYS) then
  forget(KEYS)
  return {'missing'}
end
for _, k in ipairs({KEYS[1], KEYS[3], KEYS[4], KEYS[5]}) do redis.call('PEXPIRE', k, ARGV[5]) end
local now = tonumber(ARGV[6])
local function visible(author)
  if author == ARGV[1] then return true end
  if redis.call('SISMEMBER', KEYS[3], author) == 0 then return false end
  local ends = redis.call('ZSCORE', KEYS[4], author)
  return (not ends) or tonumber(ends) <= now
end
local want = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local min = '(' .. floor .. ';'
local max = ARGV[2]
local kept = {}
local scanned = 0
local lowest = ''
local reached = '0'
while #kept < want and scanned < cap do
  local batch = redis.call('ZRANGE', KEYS[1], max, min, 'BYLEX', 'REV', 'LIMIT', 0, want)
  if #batch == 0 then
    reached = '1'
    break
  end
  for _, m in ipairs(batch) do
    scanned = scanned + 1
    lowest = m
    if m ~= '~' and visible(string.sub(m, -24)) then
      kept[#kept + 1] = m
      if #kept >= want then break end
    end
  end
  max = '(' .. lowest
end
local answer = {'ok', floor, reached, string.sub(lowest, 1, 19), tostring(#kept)}
for _, m in ipairs(kept) do answer[#answer + 1] = m end
for i = 7, #ARGV do
  if visible(ARGV[i]) then answer[#answer + 1] = ARGV[i] end
end
return answer
";

/// Starts a rebuild of timeline `KEYS` (entries, floor, follows, muted, gen, lease)
/// under token `ARGV[1]` for `ARGV[2]` ms, from nothing (what an earlier one left is
/// dropped): answers the generation of the follows it must read after, or nil if
/// another rebuild is under way or the timeline exists.
const BEGIN: &str = r"
if not redis.call('SET', KEYS[6], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local floor = redis.call('GET', KEYS[2])
if floor and floor ~= 'building' then
  redis.call('DEL', KEYS[6])
  return false
end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('SET', KEYS[2], 'building', 'PX', ARGV[2])
return redis.call('GET', KEYS[5]) or '0'
";

/// Stores what a rebuild under lease token `ARGV[1]` read, if the follows are still at
/// generation `ARGV[2]`: the follows (`ARGV[7]` of them), the mutes (`ARGV[8]` pairs of
/// end and id) and entries (the rest), each with its sentinel, keeping `ARGV[3]`
/// entries and the timeline `ARGV[4]` ms unread, with floor `ARGV[5]` for `ARGV[6]` ms
/// (reads do not extend it: the timeline is built again then). Answers 1 if stored, 0 if
/// the lease was lost or the follows moved (the rebuild starts again). `KEYS`: entries,
/// floor, follows, muted, gen, lease.
const BUILD: &str = r"
if redis.call('GET', KEYS[6]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[6])
if redis.call('GET', KEYS[2]) ~= 'building' then return 0 end
if (redis.call('GET', KEYS[5]) or '0') ~= ARGV[2] then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('INCR', KEYS[5])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('SADD', KEYS[3], '~')
redis.call('ZADD', KEYS[4], 0, '~')
redis.call('ZADD', KEYS[1], 0, '~')
local first = 9
local last = first + tonumber(ARGV[7]) - 1
for s = first, last, 1000 do
  redis.call('SADD', KEYS[3], unpack(ARGV, s, math.min(s + 999, last)))
end
first = last + 1
last = first + 2 * tonumber(ARGV[8]) - 1
for s = first, last, 1000 do
  redis.call('ZADD', KEYS[4], unpack(ARGV, s, math.min(s + 999, last)))
end
local floor = ARGV[5]
for s = last + 1, #ARGV do
  if string.sub(ARGV[s], 1, 19) > floor then redis.call('ZADD', KEYS[1], 0, ARGV[s]) end
end
floor = trim(KEYS[1], tonumber(ARGV[3]), floor)
redis.call('SET', KEYS[2], floor, 'PX', ARGV[6])
for _, k in ipairs({KEYS[1], KEYS[3], KEYS[4], KEYS[5]}) do redis.call('PEXPIRE', k, ARGV[4]) end
return 1
";

/// Records what the social graph says of the reader and account `ARGV[4]` (follows it:
/// `ARGV[5]` = 1; mutes it until `ARGV[6]` ms, or not: empty), if the follows are still
/// at generation `ARGV[1]`, with entries of its posts (`ARGV[7..]`, those above the
/// floor); an account no longer followed loses its entries. Keeps `ARGV[3]` entries and
/// the timeline `ARGV[2]` ms. Answers 1 if done or nothing to do, -1 if the follows moved
/// (read the graph again). A rebuild under way starts again. `KEYS`: entries, floor,
/// follows, muted, gen.
const PAIR: &str = r"
if (redis.call('GET', KEYS[5]) or '0') ~= ARGV[1] then return -1 end
local floor = redis.call('GET', KEYS[2])
if not floor then return 1 end
if floor ~= 'building' and not intact(KEYS) then
  forget(KEYS)
  return 1
end
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], ARGV[2])
if floor == 'building' then return 1 end
local account = ARGV[4]
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[3], account)
else
  redis.call('SREM', KEYS[3], account)
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if string.sub(m, -24) == account then redis.call('ZREM', KEYS[1], m) end
  end
end
if ARGV[6] == '' then
  redis.call('ZREM', KEYS[4], account)
else
  redis.call('ZADD', KEYS[4], ARGV[6], account)
end
for s = 7, #ARGV do
  if string.sub(ARGV[s], 1, 19) > floor then redis.call('ZADD', KEYS[1], 0, ARGV[s]) end
end
local new = trim(KEYS[1], tonumber(ARGV[3]), floor)
if new ~= floor then redis.call('SET', KEYS[2], new, 'KEEPTTL') end
for _, k in ipairs({KEYS[1], KEYS[3], KEYS[4]}) do redis.call('PEXPIRE', k, ARGV[2]) end
return 1
";

/// The keys of one reader's timeline.
struct Keys {
    entries: String,
    floor: String,
    follows: String,
    muted: String,
    version: String,
    lease: String,
}

impl Keys {
    /// The parts of a timeline, in the order every script takes them as `KEYS`.
    fn parts(&self) -> [&str; 5] {
        [&self.entries, &self.floor, &self.follows, &self.muted, &self.version]
    }

    /// `script` invoked on the parts (and the lease, for a build's scripts).
    fn invoke<'a>(&self, script: &'a redis::Script, lease: bool) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in self.parts() {
            invocation.key(key);
        }
        if lease {
            invocation.key(&self.lease);
        }
        invocation
    }
}

/// What a read of a timeline found.
enum Read {
    /// No timeline (a rebuild is due) or one being built.
    Missing,
    Building,
    Found {
        floor: i64,
        reached_floor: bool,
        lowest: i64,
        entries: Vec<(i64, ObjectId, ObjectId)>,
        pulled: Vec<ObjectId>,
    },
}

/// What the social graph says of a reader.
struct Following {
    follows: Vec<ObjectId>,
    /// Each muted account and when its mute ends (ms).
    mutes: Vec<(ObjectId, i64)>,
}

/// Home timelines. Cheap to clone.
#[derive(Clone)]
pub struct Timelines {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    /// `<REDIS_KEY_PREFIX>home:`.
    prefix: String,
    settings: Settings,
    store: Store,
    graph: Peer,
    pulled: Collection<Document>,
    /// The authors pulled, as last read (and as added here).
    pulled_known: RwLock<HashSet<ObjectId>>,
    push: redis::Script,
    read: redis::Script,
    begin: redis::Script,
    build: redis::Script,
    pair: redis::Script,
}

/// A timeline entry.
fn entry(key: i64, post: ObjectId, author: ObjectId) -> String {
    format!("{key:019}:{}:{}", post.to_hex(), author.to_hex())
}

fn parse_entry(entry: &str) -> Option<(i64, ObjectId, ObjectId)> {
    let key = entry.get(0..19)?.parse().ok()?;
    let post = ObjectId::parse_str(entry.get(20..44)?).ok()?;
    let author = ObjectId::parse_str(entry.get(45..69)?).ok()?;
    Some((key, post, author))
}

impl Timelines {
    /// Timelines in `redis` under `prefix`, unless `settings` turn them off.
    pub fn new(
        settings: Settings,
        redis: Redis,
        prefix: &str,
        store: Store,
        db: &mongo::Db,
        graph: Peer,
    ) -> Option<Self> {
        if settings.length == 0 {
            return None;
        }
        Some(Self {
            inner: Arc::new(Inner {
                redis,
                prefix: format!("{prefix}home:"),
                settings,
                store,
                graph,
                pulled: db.collection(PULLED_AUTHORS),
                pulled_known: RwLock::default(),
                push: redis::Script::new(&format!("{HELPERS}{PUSH}")),
                read: redis::Script::new(&format!("{HELPERS}{READ}")),
                begin: redis::Script::new(BEGIN),
                build: redis::Script::new(&format!("{HELPERS}{BUILD}")),
                pair: redis::Script::new(&format!("{HELPERS}{PAIR}")),
            }),
        })
    }

    fn keys(&self, reader: ObjectId) -> Keys {
        let base = format!("{}{{{}}}", self.inner.prefix, reader.to_hex());
        Keys {
            entries: base.clone(),
            floor: format!("{base}:floor"),
            follows: format!("{base}:follows"),
            muted: format!("{base}:muted"),
            version: format!("{base}:gen"),
            lease: format!("{base}:lease"),
        }
    }

    fn idle_ms(&self) -> i64 {
        ms(self.inner.settings.idle)
    }

    /// The authors pulled, as known here.
    fn pulled_now(&self) -> HashSet<ObjectId> {
        self.inner.pulled_known.read().map(|known| known.clone()).unwrap_or_default()
    }

    fn is_pulled(&self, author: ObjectId) -> bool {
        self.inner.pulled_known.read().is_ok_and(|known| known.contains(&author))
    }

    /// Reads the authors pulled again.
    pub async fn load_pulled(&self) -> Result<()> {
        use futures::TryStreamExt;
        let rows: Vec<Document> = self.inner.pulled.find(doc! {}).await?.try_collect().await?;
        let ids: HashSet<ObjectId> =
            rows.iter().filter_map(|row| row.get_object_id("_id").ok()).collect();
        if let Ok(mut known) = self.inner.pulled_known.write() {
            *known = ids;
        }
        Ok(())
    }

    /// Reads the authors pulled every [`PULLED_REFRESH`] until `stop`.
    pub async fn keep_pulled_fresh(self, stop: CancellationToken) {
        loop {
            if let Err(e) = self.load_pulled().await {
                tracing::warn!(error = %e, "could not read the authors pulled into home feeds");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PULLED_REFRESH) => {}
            }
        }
    }

    async fn pull_author(&self, author: ObjectId) -> Result<()> {
        // An insert, recorded once: an upsert would store the id as text on the stand-in.
        let record = doc! { "_id": author, "since": DateTime::now() };
        mongo::insert_once(&self.inner.pulled, &record).await?;
        if let Ok(mut known) = self.inner.pulled_known.write() {
            known.insert(author);
        }
        tracing::info!(author = %author, "author's posts are pulled into home feeds from now on");
        Ok(())
    }

    /// Up to a page and one of `reader`'s home feed below `page`'s key, newest first, if
    /// the timeline answers it; `None` when MongoDB must (no timeline yet, whose
    /// rebuild this starts; Redis unreachable; a page below the timeline's floor).
    pub async fn page(&self, reader: ObjectId, page: &PageRequest) -> Result<Option<Vec<PostDoc>>> {
        let pulled = self.pulled_now();
        let (floor, reached_floor, lowest, entries, followed_pulled) =
            match self.read(reader, page, &pulled).await {
                None | Some(Read::Building) => return Ok(None),
                Some(Read::Missing) => {
                    self.rebuild_soon(reader);
                    return Ok(None);
                }
                Some(Read::Found { floor, reached_floor, lowest, entries, pulled }) => {
                    (floor, reached_floor, lowest, entries, pulled)
                }
            };
        // The timeline holds every post it should from here up.
        let mut complete_from = if reached_floor { floor + 1 } else { lowest };
        let mut posts = Vec::new();
        if !followed_pulled.is_empty() {
            let docs = self.inner.store.by_authors(&followed_pulled, page).await?;
            if docs.len() as i64 >= page.fetch_limit() {
                complete_from = complete_from.max(docs.last().map_or(0, |p| p.sort_key));
            }
            posts.extend(docs);
        }
        let entries: Vec<(i64, ObjectId, ObjectId)> =
            entries.into_iter().filter(|(_, _, author)| !pulled.contains(author)).collect();
        let ids: Vec<ObjectId> = entries.iter().map(|(_, post, _)| *post).collect();
        let found = self.inner.store.by_ids(&ids).await?;
        if found.len() < ids.len() {
            let standing: HashSet<ObjectId> = found.iter().map(|p| p.id).collect();
            self.drop_deleted(reader, &entries, &standing).await;
        }
        posts.extend(found);
        posts.sort_by_key(|p| std::cmp::Reverse(p.sort_key));
        posts.dedup_by_key(|p| p.id);
        posts.retain(|p| p.sort_key >= complete_from);
        if posts.len() > page.size || complete_from <= 1 {
            posts.truncate(page.size + 1);
            return Ok(Some(posts));
        }
        Ok(None)
    }

    /// Takes the entries of deleted posts (those not `standing`) out of `reader`'s
    /// timeline, so that no read asks MongoDB for them again.
    async fn drop_deleted(
        &self,
        reader: ObjectId,
        entries: &[(i64, ObjectId, ObjectId)],
        standing: &HashSet<ObjectId>,
    ) {
        let mut drop = redis::cmd("ZREM");
        drop.arg(&self.keys(reader).entries);
        for (key, post, author) in entries {
            if !standing.contains(post) {
                drop.arg(entry(*key, *post, *author));
            }
        }
        let _: Option<i64> = self.inner.redis.run_always(&drop).await;
    }

    async fn read(
        &self,
        reader: ObjectId,
        page: &PageRequest,
        pulled: &HashSet<ObjectId>,
    ) -> Option<Read> {
        let keys = self.keys(reader);
        let want = page.size + 1 + SLACK;
        let below = page.after.map_or_else(|| "+".to_owned(), |key| format!("({key:019}"));
        let mut read = keys.invoke(&self.inner.read, false);
        read.arg(reader.to_hex())
            .arg(below)
            .arg(want)
            .arg(want * SCAN_FACTOR)
            .arg(self.idle_ms())
            .arg(now_ms());
        for author in pulled {
            read.arg(author.to_hex());
        }
        let answer: Vec<String> = self.inner.redis.invoke(&read).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => {}
            Some("missing") => return Some(Read::Missing),
            _ => return Some(Read::Building),
        }
        let floor = answer.get(1)?.parse().ok()?;
        let reached_floor = answer.get(2)? == "1";
        let lowest = answer.get(3)?.parse().unwrap_or(0);
        let count: usize = answer.get(4)?.parse().ok()?;
        let entries = answer.get(5..5 + count)?.iter().filter_map(|e| parse_entry(e)).collect();
        let pulled =
            answer.get(5 + count..)?.iter().filter_map(|id| ObjectId::parse_str(id).ok()).collect();
        Some(Read::Found { floor, reached_floor, lowest, entries, pulled })
    }

    /// Builds `reader`'s timeline in the background.
    fn rebuild_soon(&self, reader: ObjectId) {
        let timelines = self.clone();
        tokio::spawn(async move {
            if let Err(e) = timelines.rebuild(reader).await {
                tracing::warn!(reader = %reader, error = %e, "home timeline not built; the next read tries again");
            }
        });
    }

    /// Builds `reader`'s timeline from MongoDB, unless another process is building it.
    pub async fn rebuild(&self, reader: ObjectId) -> Result<()> {
        let keys = self.keys(reader);
        let length = self.inner.settings.length;
        for _ in 0..TRIES {
            let token = ObjectId::new().to_hex();
            let mut begin = keys.invoke(&self.inner.begin, true);
            begin.arg(&token).arg(ms(BUILD_LEASE));
            let Some(version): Option<String> = self.inner.redis.must_invoke(&begin).await? else {
                return Ok(());
            };
            let following = self.following_of(reader, None).await?;
            let pulled = self.pulled_now();
            let mut authors: Vec<ObjectId> =
                following.follows.iter().filter(|a| !pulled.contains(a)).copied().collect();
            if !pulled.contains(&reader) {
                authors.push(reader);
            }
            let newest = self.inner.store.newest_of(&authors, length).await?;
            let floor = match newest.last() {
                Some(oldest) if newest.len() >= length => oldest.0 - 1,
                _ => 0,
            };
            let mut store = keys.invoke(&self.inner.build, true);
            store
                .arg(&token)
                .arg(&version)
                .arg(length)
                .arg(self.idle_ms())
                .arg(format!("{floor:019}"))
                .arg(ms(REBUILT_AFTER.min(self.inner.settings.idle)));
            store.arg(following.follows.len()).arg(following.mutes.len());
            for id in &following.follows {
                store.arg(id.to_hex());
            }
            for (id, ends) in &following.mutes {
                store.arg(ends).arg(id.to_hex());
            }
            for (key, post, author) in &newest {
                store.arg(entry(*key, *post, *author));
            }
            let stored: i64 = self.inner.redis.must_invoke(&store).await?;
            if stored == 1 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Records in `reader`'s timeline, if it has one, whether it follows and mutes
    /// `account` now (the social graph is asked: events only say that something
    /// changed); a new follow also brings that account's recent posts.
    async fn resync(&self, reader: ObjectId, account: ObjectId) -> Result<()> {
        let keys = self.keys(reader);
        let length = self.inner.settings.length;
        for _ in 0..TRIES {
            let mut get = redis::cmd("MGET");
            get.arg(&keys.floor).arg(&keys.version);
            let [floor, version]: [Option<String>; 2] = self.inner.redis.must(&get).await?;
            let Some(floor) = floor else {
                return Ok(());
            };
            let version = version.unwrap_or_else(|| "0".into());
            let mut pair = keys.invoke(&self.inner.pair, false);
            pair.arg(&version).arg(self.idle_ms()).arg(length).arg(account.to_hex());
            if floor == "building" {
                // Only the generation moves: the rebuild under way reads again.
                pair.arg(0).arg("");
            } else {
                let now = self.following_of(reader, Some(account)).await?;
                let follows = now.follows.contains(&account);
                pair.arg(u8::from(follows));
                match now.mutes.iter().find(|(id, _)| *id == account) {
                    Some((_, ends)) => pair.arg(ends),
                    None => pair.arg(""),
                };
                if follows && !self.is_pulled(account) {
                    for (key, post, author) in
                        self.inner.store.newest_of(&[account], length).await?
                    {
                        pair.arg(entry(key, post, author));
                    }
                }
            }
            let done: i64 = self.inner.redis.must_invoke(&pair).await?;
            if done != -1 {
                return Ok(());
            }
        }
        Err(Error::Unavailable(format!(
            "the follows of {reader} kept changing while its home timeline was updated"
        )))
    }

    /// Adds `post` to the timelines of its author's followers and its author's own.
    async fn fan_out(&self, post: ObjectId) -> Result<()> {
        let Some(post) = self.inner.store.get(post).await? else {
            return Ok(());
        };
        let author = post.user_id;
        if self.is_pulled(author) {
            return Ok(());
        }
        let (followers, truncated) = self.followers(author).await?;
        if truncated {
            return self.pull_author(author).await;
        }
        let member = entry(post.sort_key, post.id, author);
        let sha = self.inner.redis.load(&self.inner.push).await?;
        let readers: Vec<ObjectId> = std::iter::once(author).chain(followers).collect();
        for batch in readers.chunks(PUSH_BATCH) {
            let mut pushes = redis::pipe();
            for reader in batch {
                let keys = self.keys(*reader);
                pushes
                    .cmd("EVALSHA")
                    .arg(&sha)
                    .arg(5)
                    .arg(&keys.parts()[..])
                    .arg(&member)
                    .arg(self.inner.settings.length)
                    .ignore();
            }
            self.inner.redis.must_all::<()>(&pushes).await?;
        }
        Ok(())
    }

    /// Adds `post` to its author's own timeline at once (the fan-out adds it again), so
    /// that the author's next read has it.
    pub async fn push_own(&self, post: &PostDoc) {
        if self.is_pulled(post.user_id) {
            return;
        }
        let keys = self.keys(post.user_id);
        let mut push = keys.invoke(&self.inner.push, false);
        push.arg(entry(post.sort_key, post.id, post.user_id)).arg(self.inner.settings.length);
        let _: Option<i64> = self.inner.redis.invoke(&push).await;
    }

    /// A deleted account's timeline goes, and it is no longer pulled.
    async fn remove(&self, user: ObjectId) -> Result<()> {
        let keys = self.keys(user);
        let mut forget = redis::cmd("DEL");
        forget.arg(&keys.parts()[..]).arg(&keys.lease);
        self.inner.redis.must::<i64>(&forget).await?;
        self.inner.pulled.delete_one(doc! { "_id": user }).await?;
        if let Ok(mut known) = self.inner.pulled_known.write() {
            known.remove(&user);
        }
        Ok(())
    }

    /// Whom `reader` follows and mutes (of everyone, or only whether `account`).
    async fn following_of(&self, reader: ObjectId, account: Option<ObjectId>) -> Result<Following> {
        let graph = &self.inner.graph;
        let request = ListFollowingIdsRequest {
            user_id: reader.to_hex(),
            limit: 0,
            without_muted: false,
            with_mutes: true,
            among: account.into_iter().map(ObjectId::to_hex).collect(),
        };
        let answer = social_kit::call!(graph, SocialGraphServiceClient.list_following_ids(request))
            .map_err(|s| graph.error(s))?;
        let follows = peer_ids(&answer.user_ids)?;
        let mutes = answer
            .mutes
            .iter()
            .filter_map(|m| {
                let id = ObjectId::parse_str(&m.muted_id).ok()?;
                let ends = m.expires_at.as_ref().map_or(FOREVER_MS, millis);
                Some((id, ends))
            })
            .collect();
        Ok(Following { follows, mutes })
    }

    /// Up to the fan-out limit of `author`'s followers, and whether it has more.
    async fn followers(&self, author: ObjectId) -> Result<(Vec<ObjectId>, bool)> {
        let graph = &self.inner.graph;
        let limit = i32::try_from(self.inner.settings.max_followers).unwrap_or(i32::MAX);
        let request = ListFollowerIdsRequest { user_id: author.to_hex(), limit };
        let answer = social_kit::call!(graph, SocialGraphServiceClient.list_follower_ids(request))
            .map_err(|s| graph.error(s))?;
        Ok((peer_ids(&answer.user_ids)?, answer.truncated))
    }
}

/// The ids a peer answered (an id it sent that does not parse is its fault: internal).
pub(crate) fn peer_ids(ids: &[String]) -> Result<Vec<ObjectId>> {
    ids.iter().map(|id| ObjectId::parse_str(id).map_err(Error::internal)).collect()
}

/// Applies one event of the timelines' queue.
pub async fn apply(timelines: Timelines, envelope: Envelope) -> anyhow::Result<()> {
    let id = |hex: &str| ObjectId::parse_str(hex);
    match &envelope.payload {
        Some(Payload::PostCreated(e)) => timelines.fan_out(id(&e.post_id)?).await?,
        Some(Payload::UserFollowed(e)) => {
            timelines.resync(id(&e.follower_id)?, id(&e.followee_id)?).await?;
        }
        Some(Payload::UserUnfollowed(e)) => {
            timelines.resync(id(&e.follower_id)?, id(&e.followee_id)?).await?;
        }
        Some(Payload::UserMuted(e)) => timelines.resync(id(&e.muter_id)?, id(&e.muted_id)?).await?,
        Some(Payload::UserUnmuted(e)) => {
            timelines.resync(id(&e.muter_id)?, id(&e.muted_id)?).await?
        }
        Some(Payload::UserDeleted(e)) => {
            timelines.remove(removed_users::deleted_user(e)?).await?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_by_key_as_text_and_read_back() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        let low = entry(9, a, b);
        let high = entry(10, b, a);
        assert!(low < high, "{low} < {high}");
        assert!(entry(i64::MAX, a, b) > high);
        assert_eq!(parse_entry(&low), Some((9, a, b)));
        assert_eq!(parse_entry("nonsense"), None);
    }
}
