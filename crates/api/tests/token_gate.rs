//! Token revocations reach every process over NATS: two token gates (two processes' worth, each
//! on its own NATS connection) against a real nats-server and PostgreSQL. Both answer from memory
//! once they have checked a token; a logout or a disabled account announced through one is
//! refused by the other within a second, without waiting for the gate's time bound.

use std::time::{Duration, Instant};

use api::auth::{Revoked, TokenGate};
use api::JwtKeys;

async fn refused_within(
    gate: &TokenGate,
    db: &sqlx::PgPool,
    claims: &api::auth::Claims,
) -> Duration {
    let started = Instant::now();
    loop {
        if gate.check(db, claims).await.is_err() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still accepted after a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_revocation_through_one_process_holds_on_another_within_a_second() {
    let nats = testkit::NatsServer::start().unwrap();
    let pg = testkit::Postgres::start().unwrap();
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    projections::MIGRATOR.run(&db).await.unwrap();
    sqlx::query(
        "INSERT INTO users (id, username, password_hash) VALUES (7, 'alice', 'x'), (8, 'bob', 'x')",
    )
    .execute(&db)
    .await
    .unwrap();
    let keys = JwtKeys::new(b"token-gate-test-secret-0123456789abcdef", 3600);
    let alice = keys
        .verify(&keys.issue(7, "alice", "user").unwrap())
        .unwrap();
    let bob = keys.verify(&keys.issue(8, "bob", "user").unwrap()).unwrap();
    // A long time bound: only the announcements can make the gates forget.
    let ttl = Duration::from_secs(3600);
    let a = TokenGate::follow(&nats.connect().await.unwrap(), ttl)
        .await
        .unwrap();
    let b_nats = nats.connect().await.unwrap();
    let b = TokenGate::follow(&b_nats, ttl).await.unwrap();
    for gate in [&a, &b] {
        gate.check(&db, &alice).await.unwrap();
        gate.check(&db, &bob).await.unwrap();
    }

    // Alice logs out through A: the revocation is recorded, then announced.
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, now() + interval '1 hour')",
    )
    .bind(&alice.jti)
    .execute(&db)
    .await
    .unwrap();
    let a_nats = nats.connect().await.unwrap();
    a.revoke_everywhere(
        &a_nats,
        &Revoked {
            user_id: Some(7),
            jti: Some(alice.jti.clone()),
        },
    )
    .await;
    assert!(
        a.check(&db, &alice).await.is_err(),
        "refused at once where it was revoked"
    );
    let took = refused_within(&b, &db, &alice).await;
    eprintln!("logout reached the other process in {took:?}");
    b.check(&db, &bob).await.unwrap();

    // Bob's account is disabled through A.
    sqlx::query("UPDATE users SET status = 0 WHERE id = 8")
        .execute(&db)
        .await
        .unwrap();
    a.revoke_everywhere(
        &a_nats,
        &Revoked {
            user_id: Some(8),
            jti: None,
        },
    )
    .await;
    let took = refused_within(&b, &db, &bob).await;
    eprintln!("a disabled account reached the other process in {took:?}");
    assert_eq!(b.check(&db, &bob).await.unwrap_err().status, 403);
}
