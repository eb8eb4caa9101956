//! Group commit and the aggregate cache under heavy contention, checked by an
//! independent reader of the stream (plain async-nats and serde_json, none of the store's code).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_nats::HeaderMap;
use cqrs_es::{Aggregate, DomainEvent};
use eventstore::envelope::Upcasters;
use eventstore::{
    ensure_streams, Actor, BusSettings, CommandBus, CommandError, CommandMeta, CommitOutcome,
    GroupCommitSettings, GroupCommitter, PendingCommit, StreamSettings,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use testkit::NatsServer;

/// A counter: the test's aggregate. Every event carries the running total and count, so a lost
/// update (a stale cache committing over a newer state) shows in the log.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Counter {
    total: i64,
    count: u64,
}

#[derive(Debug, Clone)]
enum CounterCommand {
    Add(i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added { n: i64, total: i64, count: u64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Added".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("counter error")]
struct CounterError;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let CounterCommand::Add(n) = command;
        // A counter never goes below zero.
        if self.total + n < 0 {
            return Err(CounterError);
        }
        sink.write(
            CounterEvent::Added {
                n,
                total: self.total + n,
                count: self.count + 1,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        // Accumulates (not `= total`), so an event applied twice shows in the next one.
        let CounterEvent::Added { n, .. } = event;
        self.total += n;
        self.count += 1;
    }
}

async fn bus(server: &NatsServer, settings: BusSettings) -> CommandBus {
    let client = server.connect().await.unwrap();
    let js = async_nats::jetstream::new(client);
    ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    CommandBus::with_settings(js, Upcasters::default(), settings)
}

/// Batches from two commits on, so that this test's small groups are batched.
fn small_batches() -> GroupCommitSettings {
    GroupCommitSettings {
        min_batch: 2,
        ..Default::default()
    }
}

#[derive(Debug)]
enum Outcome {
    Stored { seq: u64, n: i64 },
    Duplicate { seq: u64 },
    Conflict,
}

/// Every message on `ev.counter.>`, read with an ordered consumer: `(stream sequence, subject,
/// body as JSON)`.
async fn read_log(url: &str) -> Vec<(u64, String, serde_json::Value)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("EVENTS").await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
            filter_subject: "ev.counter.>".into(),
            deliver_subject: js.client().new_inbox(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    let mut seen_last = 0;
    while seen_last < last {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next())
            .await
            .expect("the log reads within 10 s")
            .unwrap()
            .unwrap();
        let info = m.info().unwrap();
        seen_last = info.stream_sequence;
        out.push((
            info.stream_sequence,
            m.subject.to_string(),
            serde_json::from_slice(&m.payload).unwrap(),
        ));
        if info.pending == 0 {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_on_few_aggregates_every_outcome_matches_the_log() {
    const CLIENTS: usize = 24;
    const COMMANDS: usize = 30;
    const AGGREGATES: u64 = 5;

    let server = NatsServer::start().unwrap();
    // Three writers, as three processes would be: group commit with a cache and one attempt
    // (conflicts surface), group commit with a cache and retries, plain publishes without cache.
    let buses = [
        bus(
            &server,
            BusSettings {
                max_attempts: 1,
                group_commit: Some(small_batches()),
                ..Default::default()
            },
        )
        .await,
        bus(
            &server,
            BusSettings {
                group_commit: Some(small_batches()),
                ..Default::default()
            },
        )
        .await,
        bus(
            &server,
            BusSettings {
                group_commit: None,
                cache_capacity: 0,
                max_attempts: 1,
            },
        )
        .await,
    ];

    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let bus = buses[client % buses.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut results: Vec<(String, String, Outcome)> = Vec::new();
            let mut last_acked: Option<(String, String, CommandMeta, i64)> = None;
            for i in 0..COMMANDS {
                // Every 7th command repeats the client's last acknowledged one (same command id).
                let (id, meta, n, repeat) = match (&last_acked, i % 7 == 6) {
                    (Some((_, id, meta, n)), true) => (id.clone(), meta.clone(), *n, true),
                    _ => {
                        let agg = (client as u64 * 31 + i as u64 * 17) % AGGREGATES;
                        let meta = CommandMeta::new(Actor::user(client as i64));
                        (agg.to_string(), meta, (client * 100 + i) as i64, false)
                    }
                };
                let outcome = match bus
                    .execute::<Counter>(&id, CounterCommand::Add(n), &meta)
                    .await
                {
                    Ok(c) if c.duplicate => Outcome::Duplicate {
                        seq: c.stream_sequence.unwrap(),
                    },
                    Ok(c) => {
                        assert!(!repeat, "a repeated command id was applied again");
                        let CounterEvent::Added { n: got, .. } = c.events[0].clone();
                        assert_eq!(got, n);
                        Outcome::Stored {
                            seq: c.stream_sequence.unwrap(),
                            n,
                        }
                    }
                    Err(CommandError::Conflict) => Outcome::Conflict,
                    Err(e) => panic!("client {client}: {e}"),
                };
                if matches!(outcome, Outcome::Stored { .. }) {
                    last_acked = Some((meta.command_id.clone(), id.clone(), meta.clone(), n));
                }
                results.push((meta.command_id.clone(), id, outcome));
            }
            results
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }

    eprintln!("commands done in {:?}", started.elapsed());
    // The independent reader.
    let log = read_log(&server.url()).await;
    let mut by_command: HashMap<String, Vec<(u64, String, serde_json::Value)>> = HashMap::new();
    let mut per_aggregate: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for (seq, subject, body) in &log {
        let command_id = body["command_id"].as_str().unwrap().to_string();
        by_command
            .entry(command_id)
            .or_default()
            .push((*seq, subject.clone(), body.clone()));
        for event in body["events"].as_array().unwrap() {
            per_aggregate
                .entry(subject.clone())
                .or_default()
                .push(event.clone());
        }
    }
    // Every command id is in the log at most once.
    for (id, commits) in &by_command {
        assert_eq!(
            commits.len(),
            1,
            "command {id} stored {} times",
            commits.len()
        );
    }
    let (mut stored, mut duplicates, mut conflicts) = (0, 0, 0);
    let mut acked = HashSet::new();
    for (command_id, aggregate, outcome) in &results {
        let subject = format!("ev.counter.{aggregate}");
        match outcome {
            Outcome::Stored { seq, n } => {
                stored += 1;
                let (at, subj, body) = &by_command
                    .get(command_id)
                    .unwrap_or_else(|| panic!("acknowledged {command_id} is not in the log"))[0];
                assert_eq!((*at, subj), (*seq, &subject), "{command_id}");
                assert_eq!(body["events"][0]["payload"]["Added"]["n"], *n);
                acked.insert(command_id.clone());
            }
            Outcome::Duplicate { seq } => {
                duplicates += 1;
                let (at, subj, _) = &by_command
                    .get(command_id)
                    .unwrap_or_else(|| panic!("duplicate {command_id} is not in the log"))[0];
                assert_eq!((*at, subj), (*seq, &subject), "{command_id}");
            }
            Outcome::Conflict => {
                // A conflict wrote nothing (unless the same id was acknowledged on another try).
                conflicts += 1;
            }
        }
    }
    for (command_id, _, outcome) in &results {
        if matches!(outcome, Outcome::Conflict) && !acked.contains(command_id) {
            assert!(
                !by_command.contains_key(command_id),
                "{command_id} was reported as a conflict but is in the log"
            );
        }
    }
    // Nothing in the log that was not acknowledged.
    for id in by_command.keys() {
        assert!(
            acked.contains(id),
            "{id} is in the log but was never acknowledged"
        );
    }
    // Per aggregate: sequences 1..k without gaps or repeats, totals consistent.
    for (subject, events) in &per_aggregate {
        let mut total = 0;
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event["sequence"], (i + 1) as u64, "{subject} sequence");
            let added = &event["payload"]["Added"];
            total += added["n"].as_i64().unwrap();
            assert_eq!(added["total"], total, "{subject}: lost update at {}", i + 1);
            assert_eq!(added["count"], (i + 1) as u64, "{subject} count");
        }
    }
    let total_events: usize = per_aggregate.values().map(Vec::len).sum();
    assert_eq!(total_events, stored);
    let committer = buses[1].committer().await.unwrap().unwrap();
    let (_, batches, _, _, _) = committer.stats().snapshot();
    let a = buses[0]
        .committer()
        .await
        .unwrap()
        .unwrap()
        .stats()
        .snapshot();
    let hits = buses[1]
        .cache_stats()
        .hits
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "stored {stored}, duplicates {duplicates}, conflicts {conflicts}; batches {batches} / {}; \
         cache hits {hits}",
        a.1
    );
    assert!(stored > 0 && duplicates > 0 && conflicts > 0);
    assert!(batches + a.1 > 0, "group commit never batched");
}

fn raw(subject: &str, command_id: &str, expected: u64) -> PendingCommit {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", command_id);
    headers.insert("Mychat-Command-Id", command_id);
    PendingCommit {
        subject: subject.into(),
        headers,
        body: serde_json::to_vec(&serde_json::json!({ "command_id": command_id }))
            .unwrap()
            .into(),
        command_id: command_id.into(),
        expected_last_sequence: Some(expected),
    }
}

/// A fresh nats-server with the project's streams, a client on it and its JetStream context.
async fn with_streams() -> (
    NatsServer,
    async_nats::Client,
    async_nats::jetstream::Context,
) {
    let server = NatsServer::start().unwrap();
    let client = server.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    (server, client, js)
}

#[tokio::test]
async fn a_failed_check_in_a_batch_fails_only_its_own_commit() {
    let (_server, client, js) = with_streams().await;
    // Written behind the committer's back: it cannot know these subjects moved.
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", "stored-1");
    h.insert("Mychat-Command-Id", "stored-1");
    js.publish_with_headers("ev.t.stale", h, "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let stream = js.get_stream_no_info("EVENTS").await.unwrap();
    let committer = GroupCommitter::start(
        client,
        stream.clone(),
        "EVENTS",
        GroupCommitSettings {
            max_in_flight: 1,
            ..Default::default()
        },
    );
    let committer = Arc::new(committer);
    let mut commits = vec![
        raw("ev.t.a", "a", 0),
        raw("ev.t.stale", "late", 0), // conflict: the subject is at 1
        raw("ev.t.b", "b", 0),
        raw("ev.t.other", "stored-1", 0), // duplicate of the stored command id
        raw("ev.t.c", "c", 0),
    ];
    for i in 0..20 {
        commits.push(raw(&format!("ev.t.n{i}"), &format!("n{i}"), 0));
    }
    let outcomes = futures::future::join_all(commits.iter().map(|c| {
        let committer = committer.clone();
        let c = c.clone();
        async move { committer.commit(c).await.unwrap() }
    }))
    .await;
    assert_eq!(outcomes[1], CommitOutcome::Conflict);
    assert_eq!(outcomes[3], CommitOutcome::Duplicate { sequence: 1 });
    let mut seen = HashSet::new();
    for (commit, outcome) in commits.iter().zip(&outcomes) {
        if commit.command_id == "late" || commit.command_id == "stored-1" {
            continue;
        }
        let CommitOutcome::Stored { sequence } = outcome else {
            panic!("{}: {outcome:?}", commit.command_id);
        };
        assert!(seen.insert(*sequence));
        let m = stream.direct_get(*sequence).await.unwrap();
        assert_eq!(m.subject.as_str(), commit.subject);
        assert_eq!(
            m.headers.get("Nats-Msg-Id").unwrap().as_str(),
            commit.command_id
        );
    }
    let info = js
        .get_stream("EVENTS")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 1 + 23);
    let (_, batches, _, failed, _) = committer.stats().snapshot();
    assert!(
        batches >= 1 && failed >= 1,
        "batches {batches}, failed {failed}"
    );
}

#[tokio::test]
async fn a_stale_cached_aggregate_is_reloaded_and_the_command_retried() {
    let server = NatsServer::start().unwrap();
    let a = bus(&server, BusSettings::default()).await;
    let b = bus(&server, BusSettings::default()).await;
    let meta = || CommandMeta::new(Actor::system());
    a.execute::<Counter>("x", CounterCommand::Add(1), &meta())
        .await
        .unwrap();
    // b moves the aggregate behind a's cache.
    b.execute::<Counter>("x", CounterCommand::Add(10), &meta())
        .await
        .unwrap();
    let c = a
        .execute::<Counter>("x", CounterCommand::Add(100), &meta())
        .await
        .unwrap();
    assert_eq!(
        c.events,
        vec![CounterEvent::Added {
            n: 100,
            total: 111,
            count: 3
        }]
    );
    let stats = a.cache_stats();
    assert_eq!(stats.stale.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(stats.hits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // A command on a fresh cached aggregate reads nothing from the log and commits.
    let misses = stats.misses.load(std::sync::atomic::Ordering::Relaxed);
    a.execute::<Counter>("x", CounterCommand::Add(1000), &meta())
        .await
        .unwrap();
    assert_eq!(
        stats.misses.load(std::sync::atomic::Ordering::Relaxed),
        misses
    );
    let (state, version) = b.load::<Counter>("x").await.unwrap();
    assert_eq!((state.total, version), (1111, 4));
}

/// A committer on a fresh nats-server's `EVENTS` with the default settings but `linger`.
async fn lingering_committer(linger: std::time::Duration) -> (NatsServer, Arc<GroupCommitter>) {
    let (server, client, js) = with_streams().await;
    let stream = js.get_stream_no_info("EVENTS").await.unwrap();
    let settings = GroupCommitSettings {
        linger,
        ..Default::default()
    };
    let committer = GroupCommitter::start(client, stream, "EVENTS", settings);
    (server, Arc::new(committer))
}

/// A client of `committer` on subject `ev.t.<name>`: `rounds` commits, each sent when the last
/// is acknowledged (after `pause`, if any), each expected stored.
async fn closed_loop_client(
    committer: Arc<GroupCommitter>,
    name: String,
    rounds: usize,
    pause: Option<std::time::Duration>,
) {
    let mut last = 0;
    for r in 0..rounds {
        let commit = raw(&format!("ev.t.{name}"), &format!("{name}-{r}"), last);
        match committer.commit(commit).await.unwrap() {
            CommitOutcome::Stored { sequence } => last = sequence,
            other => panic!("client {name} round {r}: {other:?}"),
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_round_goes_out_as_one_batch() {
    // A linger (and its quiet gap, a quarter of it) far longer than a round: had the committer
    // waited for more appends than its clients hold, every round would wait out the gap (at the
    // end, clients a round ahead of the others are gone and the last batch may wait once).
    let (_server, committer) = lingering_committer(std::time::Duration::from_secs(2)).await;
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 6;
    // Each client sends its next commit when its last is acknowledged.
    let clients = (0..CLIENTS)
        .map(|c| closed_loop_client(committer.clone(), format!("loop{c}"), ROUNDS, None));
    tokio::time::timeout(
        std::time::Duration::from_millis(1_900),
        futures::future::join_all(clients),
    )
    .await
    .expect("a round waited out the linger");
    let (singles, batches, batched, failed, _) = committer.stats().snapshot();
    // The first commits find the committer idle and go out alone (a few, as the clients start);
    // the rest of the first round goes as one batch, and from then on every client is back
    // before the next batch leaves: one batch a round. (Without the linger, each round splits
    // into a batch and plain publishes: 15-22 of them in this test.)
    assert_eq!(failed, 0);
    assert_eq!(singles + batched, (CLIENTS * ROUNDS) as u64);
    assert!(
        singles <= CLIENTS as u64 / 2 && batches <= ROUNDS as u64 + 1,
        "{singles} plain publishes, {batches} batches carrying {batched}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linger_that_waits_in_vain_is_not_tried_again_at_once() {
    // Clients that come back long after the linger (an HTTP client comes back only once the read
    // model shows its write), and a sparse open-loop writer: after each round's batch, the
    // writer's next commit finds the committer busy and would linger for the round's clients,
    // who are not coming; nothing else arrives, so it waits out the quiet gap (a quarter of the
    // linger, 500 ms). Timings far above a commit's own latency, even on a loaded machine.
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    const GAP: std::time::Duration = std::time::Duration::from_millis(500);
    let (_server, committer) = lingering_committer(LINGER).await;
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 3;
    let back_after = std::time::Duration::from_millis(2_500);
    let clients = (0..CLIENTS).map(|c| {
        closed_loop_client(
            committer.clone(),
            format!("late{c}"),
            ROUNDS,
            Some(back_after),
        )
    });
    // The writer: one commit every 800 ms (longer than the gap), each on its own.
    let trickle = {
        let committer = committer.clone();
        async move {
            let mut sent = Vec::new();
            for i in 0..10 {
                let committer = committer.clone();
                sent.push(tokio::spawn(async move {
                    let start = std::time::Instant::now();
                    let commit = raw(&format!("ev.t.trickle{i}"), &format!("trickle-{i}"), 0);
                    match committer.commit(commit).await.unwrap() {
                        CommitOutcome::Stored { .. } => start.elapsed(),
                        other => panic!("trickle {i}: {other:?}"),
                    }
                }));
                tokio::time::sleep(std::time::Duration::from_millis(800)).await;
            }
            futures::future::try_join_all(sent).await.unwrap()
        }
    };
    let (_, waits) = tokio::join!(futures::future::join_all(clients), trickle);
    // The first round's linger waits in vain (one commit held for the gap); the rounds after it
    // go without one. (Without the back-off, every round's: 2-3 held.)
    let held = waits.iter().filter(|w| **w >= GAP * 4 / 5).count();
    assert!(
        held <= 1,
        "{held} of the writer's {} commits were held by a linger: {waits:?}",
        waits.len()
    );
}

#[tokio::test]
async fn a_refusal_is_never_decided_on_a_stale_cached_aggregate() {
    let server = NatsServer::start().unwrap();
    let a = bus(&server, BusSettings::default()).await;
    let b = bus(&server, BusSettings::default()).await;
    let meta = || CommandMeta::new(Actor::system());
    a.execute::<Counter>("y", CounterCommand::Add(1), &meta())
        .await
        .unwrap();
    // b raises the counter behind a's cache, where it is still 1.
    b.execute::<Counter>("y", CounterCommand::Add(10), &meta())
        .await
        .unwrap();
    // On a's cached state (1) taking 5 would be refused; on the log's (11) it is allowed.
    let c = a
        .execute::<Counter>("y", CounterCommand::Add(-5), &meta())
        .await
        .unwrap();
    assert_eq!(
        c.events,
        vec![CounterEvent::Added {
            n: -5,
            total: 6,
            count: 3
        }]
    );
    // A refusal on a current state is still a refusal, and changes nothing.
    let refused = a
        .execute::<Counter>("y", CounterCommand::Add(-7), &meta())
        .await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(_))),
        "{refused:?}"
    );
    let log = read_log(&server.url()).await;
    assert_eq!(
        log.iter().filter(|(_, s, _)| s == "ev.counter.y").count(),
        3
    );
}
