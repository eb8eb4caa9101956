//! The live service registry over the admin API against a real nats-server: mychat parts
//! registered in-process, and the Python plugin of `examples/pricing_plugin.py` (nats-py, from
//! `.tools/py`) as a separate process killed by its PID.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::auth::KIND_ADMIN;
use api::JwtKeys;
use eventstore::envelope::Upcasters;
use eventstore::{ensure_streams, CommandBus, StreamSettings};
use serde_json::Value;
use sqlx::PgPool;
use testkit::{NatsServer, Postgres};
use tokio_util::sync::CancellationToken;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_registry_lists_live_parts_and_a_python_plugin_and_forgets_what_stops() {
    let nats_server = NatsServer::start().unwrap();
    let pg = Postgres::start().unwrap();
    let db = PgPool::connect(&pg.url()).await.unwrap();
    projections::MIGRATOR.run(&db).await.unwrap();
    api::seed::seed_demo(&db).await.unwrap();
    let nats = nats_server.connect().await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let layout = ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    let chat = eventstore::ChatLog::new(js.clone(), layout, Default::default());
    let bus = CommandBus::new(js, Upcasters::default());
    let shutdown = CancellationToken::new();
    let jwt = Arc::new(JwtKeys::new(b"services-test-secret-0123456789abcdef", 3600));
    let state = api::AppState::new(
        api::Services::follow(
            db.clone(),
            bus,
            nats.clone(),
            chat,
            jwt.clone(),
            Arc::new(api::ApiSettings {
                public_url: "http://127.0.0.1:1".into(),
                sandbox_secret: "sandbox".into(),
                settle_timeout: Duration::from_secs(5),
                cors_origins: Vec::new(),
                business_zone: chrono_tz::Asia::Shanghai,
            }),
        )
        .await
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let app = api::admin_router(state);
    let token = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
            .unwrap();
    });

    // Two gateway nodes, each on its own connection, with their live figure.
    let mut nodes = Vec::new();
    for n in 0..2u64 {
        let stop = CancellationToken::new();
        let client = nats_server.connect().await.unwrap();
        let id = web::registry::register(
            &client,
            web::registry::Registration {
                name: "mychat_gateway".into(),
                part: "gateway".into(),
                description: "mychat WebSocket gateway node".into(),
                address: format!("127.0.0.1:{}", 9000 + n),
                data: Some(Arc::new(move || serde_json::json!({"sockets": 10 + n}))),
            },
            stop.clone().cancelled_owned(),
        )
        .await
        .unwrap();
        nodes.push((id, stop, client));
    }

    // The Python plugin, a process of its own.
    let python = std::process::Command::new("python3")
        .arg(root().join("examples/pricing_plugin.py"))
        .arg(nats_server.url())
        .env("PYTHONPATH", root().join(".tools/py"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (nats-py in .tools/py: scripts/install)");
    let mut plugin = Killed(python);
    {
        use std::io::BufRead as _;
        let out = plugin.0.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(out)
                .read_line(&mut line)
                .map(|_| line)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(line.trim(), "ready", "the plugin started");
    }

    let http = reqwest::Client::new();
    let token = jwt.issue(1, "admin", KIND_ADMIN).unwrap();
    let list = || {
        let (http, token, admin) = (&http, &token, &admin);
        async move {
            let resp = http
                .get(format!("{admin}/api/admin/system/services"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            body["data"]["services"].as_array().unwrap().clone()
        }
    };
    let services = list().await;
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["mychat_gateway", "mychat_gateway", "pricing_plugin"],
        "{services:#?}"
    );
    for s in &services {
        assert!(s["ping_ms"].as_f64().unwrap() >= 0.0);
        assert!(s["uptime_seconds"].as_i64().unwrap() >= 0, "{s}");
        assert!(!s["node"].as_str().unwrap().is_empty(), "{s}");
    }
    let gateway = services
        .iter()
        .find(|s| s["id"] == nodes[0].0.as_str())
        .unwrap();
    assert_eq!(gateway["part"], "gateway");
    assert_eq!(gateway["address"], "127.0.0.1:9000");
    assert_eq!(gateway["endpoints"][0]["data"]["sockets"], 10, "{gateway}");
    let plugin_id = services[2]["id"].as_str().unwrap().to_string();
    assert_eq!(services[2]["part"], "plugin");
    assert_eq!(
        services[2]["endpoints"][0]["subject"],
        "plugins.pricing.quote"
    );

    // One instance by id; an unknown id is 404.
    let one = http
        .get(format!("{admin}/api/admin/system/services/{plugin_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let missing = http
        .get(format!("{admin}/api/admin/system/services/nope"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The plugin killed by its PID, a gateway node stopped: both leave the list within 5 s.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(plugin.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    nodes[1].1.cancel();
    let start = Instant::now();
    loop {
        let services = list().await;
        let ids: Vec<&str> = services.iter().map(|s| s["id"].as_str().unwrap()).collect();
        if ids == [nodes[0].0.as_str()] {
            eprintln!("stopped instances left the list in {:?}", start.elapsed());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still listed after 5 s: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
}
