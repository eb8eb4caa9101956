//! The `groups` and `api_keys` read models against real nats-server and PostgreSQL: a group's
//! story (and API keys issued, rotated and revoked) through the command bus lands in their
//! tables, and a fresh replay (batched and one by one) equals the live read models.

mod common;

use std::time::Duration;

use domain::{Dissolver, Group, GroupCommand, GroupRole};
use eventstore::{Actor, CommandBus, CommandMeta};
use tokio_util::sync::CancellationToken;

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::user(1))
}

async fn run(bus: &CommandBus, group: i64, command: GroupCommand) {
    bus.execute::<Group>(&group.to_string(), command, &meta())
        .await
        .unwrap();
}

async fn members(pool: &sqlx::PgPool, group: i64) -> Vec<(i64, String, bool)> {
    sqlx::query_as(
        "SELECT user_id, role, muted_until IS NOT NULL FROM group_members \
         WHERE group_id = $1 ORDER BY user_id",
    )
    .bind(group)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_groups_story_lands_in_its_read_model_and_replays_equal() {
    let env = common::env().await;
    let t = common::base();
    let bus = &env.bus;
    run(
        bus,
        7,
        GroupCommand::Create {
            group_id: 7,
            name: "互助小组".into(),
            notice: String::new(),
            avatar: String::new(),
            owner_id: 1,
            member_ids: vec![2, 3, 4],
            member_cap: 0,
            at: t,
        },
    )
    .await;
    let step = |n: i64| t + chrono::Duration::seconds(n);
    for command in [
        GroupCommand::ChangeRole {
            actor_id: 1,
            user_id: 2,
            role: GroupRole::Admin,
            at: step(1),
        },
        GroupCommand::AddMembers {
            actor_id: 2,
            user_ids: vec![5, 6],
            at: step(2),
        },
        GroupCommand::RemoveMember {
            actor_id: 2,
            user_id: 3,
            at: step(3),
        },
        GroupCommand::Leave {
            user_id: 4,
            at: step(4),
        },
        GroupCommand::MuteMember {
            actor_id: 1,
            user_id: 5,
            until: Some(step(600)),
            at: step(5),
        },
        GroupCommand::Update {
            actor_id: 2,
            name: None,
            notice: Some("每周三晚八点".into()),
            avatar: None,
            at: step(6),
        },
        GroupCommand::ChangeRole {
            actor_id: 1,
            user_id: 6,
            role: GroupRole::Owner,
            at: step(7),
        },
        GroupCommand::MuteAll {
            actor_id: 6,
            muted: true,
            at: step(8),
        },
    ] {
        run(bus, 7, command).await;
    }
    // A second group, dissolved by the platform.
    run(
        bus,
        8,
        GroupCommand::Create {
            group_id: 8,
            name: "short-lived".into(),
            notice: String::new(),
            avatar: String::new(),
            owner_id: 9,
            member_ids: vec![],
            member_cap: 10,
            at: t,
        },
    )
    .await;
    run(
        bus,
        8,
        GroupCommand::Dissolve {
            by: Dissolver::Platform { admin_id: 1 },
            at: step(1),
        },
    )
    .await;

    let shutdown = CancellationToken::new();
    common::start(
        &env,
        std::sync::Arc::new(projections::groups::Groups),
        &shutdown,
    );
    let mut caught_up = false;
    for _ in 0..100 {
        let row: Option<(bool,)> =
            sqlx::query_as("SELECT dissolved_at IS NOT NULL FROM groups WHERE id = 8")
                .fetch_optional(&env.pool)
                .await
                .unwrap();
        let all_muted: Option<(bool,)> =
            sqlx::query_as("SELECT all_muted FROM groups WHERE id = 7")
                .fetch_optional(&env.pool)
                .await
                .unwrap();
        if row == Some((true,)) && all_muted == Some((true,)) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "the groups projection did not apply the story");

    let (name, notice, owner, count, cap): (String, String, i64, i32, i32) = sqlx::query_as(
        "SELECT name, notice, owner_id, member_count, member_cap FROM groups WHERE id = 7",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        (name.as_str(), notice.as_str(), owner, count, cap),
        ("互助小组", "每周三晚八点", 6, 4, 2000)
    );
    assert_eq!(
        members(&env.pool, 7).await,
        vec![
            (1, "admin".to_string(), false),
            (2, "admin".to_string(), false),
            (5, "member".to_string(), true),
            (6, "owner".to_string(), false),
        ]
    );
    assert_eq!(
        members(&env.pool, 8).await,
        vec![(9, "owner".to_string(), false)]
    );

    // The same story replayed from the log, batched and one by one, equals the live tables.
    let diffs = common::fresh_replay_diff(&env).await;
    assert!(diffs.is_empty(), "replay differs: {diffs:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn api_keys_issued_rotated_and_revoked_land_in_their_read_model() {
    use domain::{ApiKey, ApiKeyCommand, KeySecret};
    let env = common::env().await;
    let t = common::base();
    let secret = |p: &str| KeySecret {
        prefix: p.into(),
        hash: format!("hash-of-{p}"),
    };
    let key = |id: i64, command: ApiKeyCommand| {
        let bus = env.bus.clone();
        async move {
            bus.execute::<ApiKey>(&id.to_string(), command, &meta())
                .await
                .unwrap();
        }
    };
    for id in [1, 2] {
        key(
            id,
            ApiKeyCommand::Issue {
                key_id: id,
                name: format!("key {id}"),
                scopes: vec!["finance:view".into()],
                secret: secret(&format!("mk_{id}a")),
                created_by: 1,
                expires_at: None,
                rate_per_minute: Some(60),
                at: t,
            },
        )
        .await;
    }
    key(
        1,
        ApiKeyCommand::Rotate {
            by: 1,
            secret: secret("mk_1b"),
            grace_seconds: 30,
            at: t + chrono::Duration::seconds(5),
        },
    )
    .await;
    key(
        2,
        ApiKeyCommand::Revoke {
            by: 1,
            at: t + chrono::Duration::seconds(6),
        },
    )
    .await;
    let shutdown = CancellationToken::new();
    common::start(
        &env,
        std::sync::Arc::new(projections::api_keys::ApiKeys),
        &shutdown,
    );
    type Row = (i64, String, Option<String>, bool, bool);
    let mut rows: Vec<Row> = Vec::new();
    for _ in 0..100 {
        rows = sqlx::query_as(
            "SELECT id, prefix, previous_prefix, previous_valid_until IS NOT NULL, \
             revoked_at IS NOT NULL FROM api_keys ORDER BY id",
        )
        .fetch_all(&env.pool)
        .await
        .unwrap();
        if rows.len() == 2 && rows[1].4 && rows[0].2.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows,
        vec![
            (
                1,
                "mk_1b".to_string(),
                Some("mk_1a".to_string()),
                true,
                false
            ),
            (2, "mk_2a".to_string(), None, false, true),
        ]
    );
    let diffs = common::fresh_replay_diff(&env).await;
    assert!(diffs.is_empty(), "replay differs: {diffs:?}");
    shutdown.cancel();
}
