//! Demo data for `mychat up`: the super administrator `admin` / `admin123` (as MyChat seeded
//! it), three counselors who log in with `/api/login`, and a user. Idempotent: existing rows are
//! left alone.

use sqlx::PgPool;

use crate::auth::hash_password;

/// A seeded counselor: login, display name, title, specialty, price in fen per minute.
pub const COUNSELORS: [(&str, &str, &str, &str, i64); 3] = [
    (
        "counselor1",
        "林晓",
        "国家二级心理咨询师",
        "情感咨询,婚姻家庭",
        500,
    ),
    ("counselor2", "王静", "心理治疗师", "焦虑抑郁,睡眠障碍", 800),
    (
        "counselor3",
        "陈默",
        "临床心理学家",
        "职场发展,人际关系",
        1200,
    ),
];
/// The seeded counselors' password.
pub const COUNSELOR_PASSWORD: &str = "counselor123";
/// The seeded user and password.
pub const DEMO_USER: (&str, &str) = ("demo", "demo123");
/// The seeded super administrator and password (change it: `mychat up` warns while it is unchanged).
pub const DEFAULT_ADMIN: (&str, &str) = ("admin", "admin123");

/// Inserts the demo data that is missing.
///
/// # Errors
/// On a database error.
pub async fn seed_demo(pool: &PgPool) -> anyhow::Result<()> {
    let admin_hash = hash_password(DEFAULT_ADMIN.1).await?;
    sqlx::query(
        "INSERT INTO administrators (username, password_hash, real_name, role) VALUES ($1, $2, '超级管理员', 'super_admin') \
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(DEFAULT_ADMIN.0)
    .bind(admin_hash)
    .execute(pool)
    .await?;
    let user_hash = hash_password(DEMO_USER.1).await?;
    sqlx::query("INSERT INTO users (username, password_hash) VALUES ($1, $2) ON CONFLICT (username) DO NOTHING")
        .bind(DEMO_USER.0)
        .bind(user_hash)
        .execute(pool)
        .await?;
    let counselor_hash = hash_password(COUNSELOR_PASSWORD).await?;
    for (i, (login, name, title, specialty, price)) in COUNSELORS.iter().enumerate() {
        let user_id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash) VALUES ($1, $2) \
             ON CONFLICT (username) DO UPDATE SET username = EXCLUDED.username RETURNING id",
        )
        .bind(login)
        .bind(&counselor_hash)
        .fetch_one(pool)
        .await?;
        sqlx::query(
            "INSERT INTO counselors (user_id, name, title, specialty, price_fen, years_exp, rating, bio) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(name)
        .bind(title)
        .bind(specialty)
        .bind(price)
        .bind(5 + i as i32 * 3)
        .bind(4.9 - i as f64 * 0.1)
        .bind(format!("{name}，{title}，擅长{specialty}。"))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// True while the seeded administrator still has the default password.
pub async fn default_admin_password_unchanged(pool: &PgPool) -> bool {
    let hash: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM administrators WHERE username = $1")
            .bind(DEFAULT_ADMIN.0)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
    match hash {
        Some(h) => crate::auth::verify_password(DEFAULT_ADMIN.1, &h).await,
        None => false,
    }
}
