//! Shared setup for the projection tests: real nats-server and Postgres, and a money story
//! driven through the command bus (the process manager does the follow-ups).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{
    AccountCommand, ChatSession, CounselorAccount, EndReason, Order, OrderCommand, Payment,
    PaymentCommand, SessionCommand,
};
use eventstore::envelope::Upcasters;
use eventstore::{ensure_streams, Actor, CommandBus, CommandMeta, StreamSettings};
use projections::process_manager::ProcessManager;
use projections::{LiveFeeds, Projection, Projector, ProjectorSettings, MIGRATOR};
use testkit::{NatsServer, Postgres};
use tokio_util::sync::CancellationToken;

pub struct Env {
    pub nats: NatsServer,
    pub pg: Postgres,
    pub pool: sqlx::PgPool,
    pub client: async_nats::Client,
    pub bus: CommandBus,
    /// The live feeds every projector started by [`start`] shares, as in a service process.
    pub feeds: LiveFeeds,
}

pub async fn env() -> Env {
    let nats = NatsServer::start().unwrap();
    let pg = Postgres::start().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&pg.url())
        .await
        .unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    let client = nats.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    let bus = CommandBus::new(js, Upcasters::default());
    let feeds = LiveFeeds::new(client.clone(), ProjectorSettings::default().batch_size);
    Env {
        nats,
        pg,
        pool,
        client,
        bus,
        feeds,
    }
}

/// Starts a worker for each read model and the process manager.
pub fn start_projectors(env: &Env, shutdown: &CancellationToken) {
    let mut all = projections::read_models();
    all.push(Arc::new(ProcessManager {
        bus: env.bus.clone(),
    }));
    for projection in all {
        start(env, projection, shutdown);
    }
}

pub fn start(
    env: &Env,
    projection: Arc<dyn Projection>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let projector = Projector {
        pool: env.pool.clone(),
        nats: env.client.clone(),
        projection,
        settings: ProjectorSettings {
            feeds: Some(env.feeds.clone()),
            ..ProjectorSettings::default()
        },
    };
    tokio::spawn(projector.run(shutdown.clone()))
}

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::system())
}

pub fn base() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// Order `id` is placed, paid through a provider, chatted `used` minutes and ended: the process
/// manager marks it paid, credits the counselor, refunds the rest and completes it.
pub async fn order_story(
    bus: &CommandBus,
    id: i64,
    user: i64,
    counselor: i64,
    minutes: i64,
    used: i64,
) {
    order_story_priced(bus, id, user, counselor, minutes, used, 100 + id).await;
}

/// [`order_story`] at `price` fen per minute.
pub async fn order_story_priced(
    bus: &CommandBus,
    id: i64,
    user: i64,
    counselor: i64,
    minutes: i64,
    used: i64,
    price: i64,
) {
    let t = base() + chrono::Duration::minutes(id * 200);
    bus.execute::<Order>(
        &id.to_string(),
        OrderCommand::Place {
            order_no: format!("ORD{id}"),
            user_id: user,
            counselor_id: counselor,
            duration_minutes: minutes,
            price_per_minute: price,
            schedule_time: None,
            notes: String::new(),
            placed_at: t,
        },
        &meta(),
    )
    .await
    .unwrap();
    let method = ["sandbox", "wechat", "alipay"][(id % 3) as usize];
    bus.execute::<Payment>(
        &id.to_string(),
        PaymentCommand::Create {
            payment_no: format!("PAY{id}"),
            order_id: id,
            user_id: user,
            amount: minutes * price,
            method: method.into(),
            trade_type: "NATIVE".into(),
            created_at: t,
        },
        &meta(),
    )
    .await
    .unwrap();
    bus.execute::<Payment>(
        &id.to_string(),
        PaymentCommand::Capture {
            provider_txn_id: format!("TXN{id}"),
            amount: minutes * price,
            captured_at: t + chrono::Duration::seconds(5),
        },
        &meta(),
    )
    .await
    .unwrap();
    let start = t + chrono::Duration::minutes(1);
    bus.execute::<ChatSession>(
        &id.to_string(),
        SessionCommand::Start {
            order_id: id,
            user_id: user,
            counselor_id: counselor,
            counselor_user_id: 1000 + counselor,
            price_per_minute: price,
            prepaid_minutes: minutes,
            started_at: start,
        },
        &meta(),
    )
    .await
    .unwrap();
    bus.execute::<ChatSession>(
        &id.to_string(),
        SessionCommand::End {
            ended_by: user,
            reason: EndReason::Participant,
            ended_at: start + chrono::Duration::seconds(used * 60 - 30),
        },
        &meta(),
    )
    .await
    .unwrap();
}

/// Waits until the counselor account has at least `amount` fen available (per the aggregate).
pub async fn wait_for_balance(bus: &CommandBus, counselor: i64, amount: i64) {
    for _ in 0..200 {
        let (account, _) = bus
            .load::<CounselorAccount>(&counselor.to_string())
            .await
            .unwrap();
        if account.balance >= amount {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("counselor {counselor} never had {amount} fen");
}

pub async fn withdraw(
    bus: &CommandBus,
    counselor: i64,
    withdrawal: i64,
    amount: i64,
    outcome: &str,
) {
    let t = base() + chrono::Duration::days(30);
    let id = counselor.to_string();
    bus.execute::<CounselorAccount>(
        &id,
        AccountCommand::RequestWithdrawal {
            counselor_id: counselor,
            withdrawal_id: withdrawal,
            amount,
            bank_name: "Bank".into(),
            bank_account: "6222".into(),
            account_name: "C".into(),
            at: t,
        },
        &meta(),
    )
    .await
    .unwrap();
    match outcome {
        "transfer" => {
            bus.execute::<CounselorAccount>(
                &id,
                AccountCommand::ApproveWithdrawal {
                    withdrawal_id: withdrawal,
                    admin_id: 1,
                    at: t,
                },
                &meta(),
            )
            .await
            .unwrap();
            bus.execute::<CounselorAccount>(
                &id,
                AccountCommand::TransferWithdrawal {
                    withdrawal_id: withdrawal,
                    admin_id: 1,
                    at: t,
                },
                &meta(),
            )
            .await
            .unwrap();
        }
        "reject" => {
            bus.execute::<CounselorAccount>(
                &id,
                AccountCommand::RejectWithdrawal {
                    withdrawal_id: withdrawal,
                    admin_id: 1,
                    reason: "wrong account".into(),
                    at: t,
                },
                &meta(),
            )
            .await
            .unwrap();
        }
        _ => {}
    }
}

/// Reconciles `schema` until it passes (the process manager's follow-ups are asynchronous), up
/// to 30 s; returns the last report.
pub async fn reconcile_until_ok(env: &Env, schema: &str) -> projections::reconcile::Report {
    let options = projections::reconcile::ReconcileOptions {
        schema: schema.into(),
        wait: Duration::from_secs(2),
        stuck_after: Duration::from_secs(3650 * 86400),
        ..Default::default()
    };
    let mut report = None;
    for _ in 0..30 {
        let r = projections::reconcile::reconcile(&env.pool, &env.client, &options)
            .await
            .unwrap();
        if r.ok() {
            return r;
        }
        report = Some(r);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let r = report.unwrap();
    panic!("never reconciled:\n{}", projections::reconcile::render(&r));
}

pub async fn reconcile_once(env: &Env, schema: &str) -> projections::reconcile::Report {
    let options = projections::reconcile::ReconcileOptions {
        schema: schema.into(),
        wait: Duration::from_secs(5),
        stuck_after: Duration::from_secs(3650 * 86400),
        ..Default::default()
    };
    projections::reconcile::reconcile(&env.pool, &env.client, &options)
        .await
        .unwrap()
}

/// Replays every read model at the head into an audit schema and diffs it with `public`.
pub async fn fresh_replay_diff(env: &Env) -> Vec<projections::rebuild::RowDiff> {
    let mut js = async_nats::jetstream::new(env.client.clone());
    let head = js
        .get_stream(eventstore::EVENTS_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let _ = &mut js;
    let report = projections::rebuild::audit_replay(
        &env.pool,
        &env.client,
        &projections::read_models(),
        projections::rebuild::AuditPoint::Sequence(head),
        &projections::rebuild::LogProgress,
    )
    .await
    .unwrap();
    let mut diffs = projections::rebuild::diff(
        &env.pool,
        &report.schema,
        "public",
        &projections::read_models(),
    )
    .await
    .unwrap();
    // The batched replay equals one applied message by message.
    diffs.extend(one_by_one_diff(env, &report.schema).await);
    diffs
}

pub async fn wait_caught_up(env: &Env) {
    let js = async_nats::jetstream::new(env.client.clone());
    for _ in 0..300 {
        let statuses =
            projections::status::status(&env.pool, &env.client, &projections::read_models())
                .await
                .unwrap();
        if statuses.iter().all(|s| s.lag_events == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = js;
    panic!("projections never caught up");
}

/// A read model applied strictly message by message: it delegates everything but
/// `apply_batch`, so the runtime's default loops over [`Projection::apply`].
pub struct OneByOne(pub Arc<dyn Projection>);

#[async_trait::async_trait]
impl Projection for OneByOne {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn stream(&self) -> &'static str {
        self.0.stream()
    }
    fn subjects(&self) -> Vec<String> {
        self.0.subjects()
    }
    fn version(&self) -> i32 {
        self.0.version()
    }
    fn tables(&self) -> Vec<&'static str> {
        self.0.tables()
    }
    async fn apply(
        &self,
        tx: &mut sqlx::PgConnection,
        message: &projections::LogMessage,
    ) -> anyhow::Result<()> {
        self.0.apply(tx, message).await
    }
}

/// Replays every read model message by message ([`OneByOne`]) into `onebyone` (re-created) and
/// diffs it against `against` (e.g. a batched audit replay).
pub async fn one_by_one_diff(env: &Env, against: &str) -> Vec<projections::rebuild::RowDiff> {
    let models: Vec<Arc<dyn Projection>> = projections::read_models()
        .into_iter()
        .map(|p| Arc::new(OneByOne(p)) as Arc<dyn Projection>)
        .collect();
    sqlx::query("DROP SCHEMA IF EXISTS onebyone CASCADE")
        .execute(&env.pool)
        .await
        .unwrap();
    projections::runtime::prepare_schema(&env.pool, "onebyone", &models, false)
        .await
        .unwrap();
    for p in &models {
        projections::rebuild::replay_into(
            &env.pool,
            &env.client,
            p.as_ref(),
            "onebyone",
            None,
            &projections::rebuild::LogProgress,
        )
        .await
        .unwrap();
    }
    projections::rebuild::diff(&env.pool, "onebyone", against, &models)
        .await
        .unwrap()
}
