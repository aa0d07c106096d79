//! A requested shutdown is quiet: no WARN or ERROR from ingest (the broker
//! closing the connection after our DISCONNECT is not a lost connection).

mod common;
use common::*;
use std::sync::{Arc, Mutex};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Records the WARN and ERROR events of the ingest crate.
#[derive(Clone, Default)]
struct Loud(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Loud {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let m = event.metadata();
        if *m.level() <= Level::WARN && m.target().starts_with("ingest") {
            let mut fields = String::new();
            event.record(&mut |f: &tracing::field::Field, v: &dyn std::fmt::Debug| {
                fields.push_str(&format!("{}={v:?} ", f.name()));
            });
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}: {fields}", m.level(), m.target()));
        }
    }
}

// current_thread: every task of the replica runs under this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_requested_shutdown_logs_no_warning() {
    let loud = Loud::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(loud.clone()));
    let db = fresh_database().await;
    let gw = unique("gws");
    let r = start(config_for(&db, &unique("grp"), &unique("ings"), &gw)).await;
    let meters = vec![format!("{gw}-m0")];
    register(&r.pool, &gw, &meters, None).await;
    let mut p = Publisher::connect(&unique("pub")).await;
    p.publish(&round(&gw, 1, &meters, 0)).await;
    p.flush().await;
    wait_for(&r.pool, "SELECT count(*) FROM metering.readings_v1", 1, 20).await;
    p.close().await;
    r.stop().await;
    drop_database(&db).await;
    let loud = loud.0.lock().unwrap().clone();
    assert!(loud.is_empty(), "{loud:#?}");
}
