//! The event store against a real nats-server.

use domain::{AccountCommand, CounselorAccount, Order, OrderCommand, OrderEvent};
use eventstore::envelope::Upcasters;
use eventstore::{
    ensure_streams, Actor, CommandBus, CommandError, CommandMeta, Commit, StreamSettings,
};
use testkit::NatsServer;

async fn bus(server: &NatsServer) -> CommandBus {
    let client = server.connect().await.unwrap();
    let js = async_nats::jetstream::new(client);
    ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    CommandBus::new(js, Upcasters::default())
}

fn place(order_no: &str) -> OrderCommand {
    OrderCommand::Place {
        order_no: order_no.into(),
        user_id: 7,
        counselor_id: 3,
        duration_minutes: 10,
        price_per_minute: 500,
        schedule_time: None,
        notes: String::new(),
        placed_at: chrono::Utc::now(),
    }
}

fn credit(session_id: i64) -> AccountCommand {
    AccountCommand::CreditEarnings {
        counselor_id: 3,
        session_id,
        order_id: session_id,
        amount: 700,
        at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn a_command_commits_its_events_with_the_whole_envelope() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let mut meta = CommandMeta::new(Actor::user(7));
    meta.causation_id = Some("req-1".into());
    let committed = bus
        .execute::<Order>("1", place("ORD1"), &meta)
        .await
        .unwrap();
    let seq = committed.stream_sequence.expect("a commit");

    let stream = bus.jetstream().get_stream("EVENTS").await.unwrap();
    let raw = stream.direct_get(seq).await.unwrap();
    assert_eq!(raw.subject.as_str(), "ev.order.1");
    assert_eq!(
        raw.headers.get("Nats-Msg-Id").unwrap().as_str(),
        meta.command_id
    );
    assert_eq!(
        raw.headers.get("Mychat-Event-Types").unwrap().as_str(),
        "OrderPlaced"
    );
    let events = Commit::decode(&raw.payload).unwrap().into_stored(seq);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (
            e.aggregate_type.as_str(),
            e.aggregate_id.as_str(),
            e.sequence
        ),
        ("order", "1", 1)
    );
    assert_eq!(
        (e.event_type.as_str(), e.event_version.as_str()),
        ("OrderPlaced", "1.0")
    );
    assert_eq!(e.command_id, meta.command_id);
    assert_eq!(e.correlation_id, meta.correlation_id);
    assert_eq!(e.causation_id.as_deref(), Some("req-1"));
    assert_eq!(e.actor, Actor::user(7));
    assert!(matches!(
        e.decode::<OrderEvent>().unwrap(),
        OrderEvent::OrderPlaced { amount: 5_000, .. }
    ));

    let config = stream.cached_info().config.clone();
    assert!(config.deny_delete && config.deny_purge && config.allow_direct);
}

#[tokio::test]
async fn two_writers_racing_on_one_aggregate_exactly_one_wins() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let store = bus.store::<Order>().await.unwrap();
    use cqrs_es::{Aggregate, EventStore};

    // Both writers load the same (empty) aggregate, then both commit.
    let a = store.load_aggregate("42").await.unwrap();
    let b = store.load_aggregate("42").await.unwrap();
    let mut results = Vec::new();
    for (context, no) in [(a, "A"), (b, "B")] {
        let mut context = context;
        let sink = cqrs_es::event_sink::EventSink::default();
        context
            .aggregate
            .handle(place(no), &(), &sink)
            .await
            .unwrap();
        let events = sink.collect().await;
        results.push(
            store
                .commit(events, context, CommandMeta::new(Actor::user(7)).to_map())
                .await,
        );
    }
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(cqrs_es::AggregateError::AggregateConflict)
    ));
    let history = store.load_events("42").await.unwrap();
    assert_eq!(history.len(), 1);
    assert!(
        matches!(&history[0].payload, OrderEvent::OrderPlaced { order_no, .. } if order_no == "A")
    );
}

#[tokio::test]
async fn concurrent_commands_on_one_aggregate_all_land_once_in_sequence() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let mut tasks = Vec::new();
    for session in 1..=8 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            bus.execute::<CounselorAccount>(
                "3",
                credit(session),
                &CommandMeta::new(Actor::system()),
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CommandError::Conflict) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let store = bus.store::<CounselorAccount>().await.unwrap();
    use cqrs_es::EventStore;
    let history = store.load_events("3").await.unwrap();
    assert_eq!(
        history.len(),
        ok,
        "every acknowledged command is in the log exactly once"
    );
    let sequences: Vec<usize> = history.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=ok).collect::<Vec<_>>(),
        "no aggregate sequence skipped or repeated"
    );
}

#[tokio::test]
async fn a_retried_command_id_is_not_applied_twice() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let store = bus.store::<Order>().await.unwrap();
    use cqrs_es::{Aggregate, EventStore};
    let meta = CommandMeta::new(Actor::user(7));
    // The same commit sent twice (a client retry after a lost ack): JetStream keeps one.
    for _ in 0..2 {
        let mut context = store.load_aggregate("9").await.unwrap();
        context.last_stream_sequence = 0;
        context.version = 0;
        let sink = cqrs_es::event_sink::EventSink::default();
        context.aggregate = Order::default();
        context
            .aggregate
            .handle(place("ORD9"), &(), &sink)
            .await
            .unwrap();
        let envelopes = store
            .commit(sink.collect().await, context, meta.to_map())
            .await
            .unwrap();
        assert_eq!(envelopes.len(), 1);
    }
    assert_eq!(store.load_events("9").await.unwrap().len(), 1);
}

#[tokio::test]
async fn events_survive_a_nats_server_restart() {
    let mut server = NatsServer::start().unwrap();
    {
        let bus = bus(&server).await;
        bus.execute::<Order>("5", place("ORD5"), &CommandMeta::new(Actor::user(7)))
            .await
            .unwrap();
    }
    server.kill();
    server.restart().unwrap();
    let bus = bus(&server).await;
    let (order, version) = bus.load::<Order>("5").await.unwrap();
    assert_eq!(version, 1);
    assert_eq!(order.order_no, "ORD5");
    assert_eq!(order.amount, 5_000);
}

/// A reader that ends at the head, with patience, outlives a nats-server that is down for 10 s
/// when it starts: it re-creates its consumer with a backoff, says it is failing meanwhile, and
/// once the server is back reads every message once and ends. One without patience fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_reader_outlives_a_nats_server_restart() {
    use eventstore::{LogReader, ReadOptions, ReadUntil};
    use std::time::Duration;
    let mut server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    for n in 0..3 {
        let meta = CommandMeta::new(Actor::user(7));
        bus.execute::<Order>(&format!("p{n}"), place(&format!("ORDP{n}")), &meta)
            .await
            .unwrap();
    }
    server.kill();
    let options = ReadOptions::new("EVENTS", 0, ReadUntil::Head);
    let js = bus.jetstream().clone();
    let patient = LogReader::spawn(
        js.clone(),
        options.clone().patience(Duration::from_secs(30)),
    );
    let impatient = LogReader::spawn(js, options);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(patient.is_failing(), "the server is down");
    server.restart().unwrap();
    let drain = |mut reader: LogReader| async move {
        let mut read = Vec::new();
        while let Some(batch) = tokio::time::timeout(Duration::from_secs(30), reader.next())
            .await
            .expect("the reader ends")
        {
            match batch {
                Ok(batch) => read.extend(batch.into_iter().map(|e| e.subject)),
                Err(e) => return Err(e),
            }
        }
        Ok(read)
    };
    assert_eq!(
        drain(patient).await.expect("no error"),
        vec!["ev.order.p0", "ev.order.p1", "ev.order.p2"]
    );
    let refused = drain(impatient).await.unwrap_err();
    assert!(refused.to_string().contains("in a row"), "{refused}");
}
