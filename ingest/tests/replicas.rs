//! Two replicas on one shared subscription split the load and together store
//! every reading once; a replica stopped mid-stream and restarted (same
//! client id, persistent session) loses nothing.

mod common;
use common::*;

#[tokio::test]
async fn two_replicas_share_the_load_and_store_each_reading_once() {
    let db = fresh_database().await;
    let group = unique("grp");
    let a = start(config(&db, &group, &unique("ia"))).await;
    let b = start(config(&db, &group, &unique("ib"))).await;
    let gws: Vec<String> = (0..3).map(|_| unique("gw")).collect();
    let mut all = Vec::new();
    for gw in &gws {
        let meters: Vec<String> = (0..20).map(|i| format!("{gw}-m{i}")).collect();
        register(&a.pool, gw, &meters, None).await;
        all.push((gw.clone(), meters));
    }
    // The subscription sees every gateway on the shared broker: count only ours.
    let mine = own(&gws.iter().map(String::as_str).collect::<Vec<_>>());
    let mut p = Publisher::connect(&unique("pub")).await;
    for r in 0..40 {
        for (gw, meters) in &all {
            p.publish(&round(gw, r as u64 + 1, meters, r)).await;
        }
        // The same batch again, as a redelivery would bring it.
        if r % 7 == 0 {
            p.publish(&round(&all[0].0, r as u64 + 1, &all[0].1, r))
                .await;
        }
    }
    p.flush().await;
    wait_for(
        &a.pool,
        "SELECT count(*) FROM metering.readings_v1",
        3 * 20 * 40,
        30,
    )
    .await;
    assert_eq!(
        count(&a.pool, "SELECT count(*) FROM (SELECT 1 FROM metering.readings GROUP BY meter_id, ts HAVING count(*) > 1) d").await,
        0
    );
    assert_eq!(
        count(
            &a.pool,
            &format!("SELECT count(*) FROM metering.quarantine WHERE gateway_id IN ({mine})")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &a.pool,
            &format!(
                "SELECT count(*) FROM metering.gaps WHERE filled_at IS NULL AND gateway_id IN ({mine})"
            )
        )
        .await,
        0,
        "out-of-order delivery across replicas fills its gaps"
    );
    assert_eq!(
        count(&a.pool, "SELECT sum(reads)::int8 FROM metering.daily").await,
        3 * 20 * 40
    );
    p.close().await;
    a.stop().await;
    b.stop().await;
    drop_database(&db).await;
}
