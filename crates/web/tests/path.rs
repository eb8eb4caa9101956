//! The path extractor: ids as the documents type them (JSON Schema integers, `3.0` included).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;

async fn answer(uri: &str) -> (StatusCode, String) {
    let app =
        Router::new()
            .route(
                "/one/{id}",
                get(|web::Path(id): web::Path<i64>| async move { id.to_string() }),
            )
            .route(
                "/two/{group}/{seq}",
                get(
                    |web::Path((group, seq)): web::Path<(i64, u64)>| async move {
                        format!("{group}/{seq}")
                    },
                ),
            )
            .route(
                "/named/{name}",
                get(|web::Path(name): web::Path<String>| async move { name }),
            )
            .route(
                "/file/{id}/{name}",
                get(
                    |web::Path((id, name)): web::Path<(i64, String)>| async move {
                        format!("{id}:{name}")
                    },
                ),
            );
    let res = app
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_integer_with_a_zero_fraction_is_that_integer() {
    assert_eq!(answer("/one/3").await, (StatusCode::OK, "3".into()));
    assert_eq!(answer("/one/3.0").await, (StatusCode::OK, "3".into()));
    assert_eq!(answer("/one/-7.00").await, (StatusCode::OK, "-7".into()));
    assert_eq!(answer("/two/5.0/9").await, (StatusCode::OK, "5/9".into()));
    assert_eq!(answer("/two/5/9.0").await, (StatusCode::OK, "5/9".into()));
    assert_eq!(answer("/two/-1.0/2").await, (StatusCode::OK, "-1/2".into()));
    // Text stays text, also beside an id written `3.0`.
    assert_eq!(answer("/named/3.0").await, (StatusCode::OK, "3.0".into()));
    assert_eq!(
        answer("/file/3.0/12").await,
        (StatusCode::OK, "3:12".into())
    );
    assert_eq!(
        answer("/file/3.0/1.0").await,
        (StatusCode::OK, "3:1.0".into())
    );
}

#[tokio::test]
async fn anything_else_that_is_not_an_integer_names_no_resource() {
    for uri in [
        "/one/3.5",
        "/one/abc",
        "/one/3.",
        "/one/.0",
        "/one/None",
        "/two/1.5/2",
        "/one/1e3",
    ] {
        let (status, body) = answer(uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert!(body.contains("no such resource"), "{uri}: {body}");
    }
}
