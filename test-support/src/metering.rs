//! The stand-in for ingest's read contract in a test's own database: the
//! function `metering.period_reads_v1(period_start, period_end)` that
//! billing reads consumption through (ingest/migrations, docs), with the
//! contract's exact signature and a body the test chooses. Only ever in a
//! fresh test database: it creates the `metering` schema.

use sqlx::PgPool;

/// The contract's signature: what billing calls and what ingest defines.
pub const PERIOD_READS_V1: &str =
    "metering.period_reads_v1(period_start timestamptz, period_end timestamptz) \
     RETURNS TABLE (meter_id text, start_ts timestamptz, start_volume_l bigint, end_ts timestamptz, \
                    end_volume_l bigint, reads bigint)";

/// Creates schema `metering` and `metering.period_reads_v1` answering with
/// `select`: a SQL query over the parameters `period_start` and
/// `period_end` returning the contract's six columns.
pub async fn stub_period_reads(pool: &PgPool, select: &str) {
    sqlx::query("CREATE SCHEMA metering")
        .execute(pool)
        .await
        .expect("create schema metering (a fresh test database has none)");
    sqlx::query(&format!(
        "CREATE FUNCTION {PERIOD_READS_V1} LANGUAGE sql STABLE AS $$ {select} $$"
    ))
    .execute(pool)
    .await
    .expect("create the period-reads stand-in");
}

/// The stand-in where one meter turns from `start_volume_l` to
/// `end_volume_l` over any period (read at its first and last instant,
/// `reads` readings in between).
pub async fn stub_one_meter(
    pool: &PgPool,
    meter_id: &str,
    start_volume_l: i64,
    end_volume_l: i64,
    reads: i64,
) {
    assert!(
        meter_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "a plain meter id: {meter_id:?}"
    );
    stub_period_reads(
        pool,
        &format!(
            "SELECT '{meter_id}'::text, period_start, {start_volume_l}::bigint, period_end, \
             {end_volume_l}::bigint, {reads}::bigint"
        ),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_stand_in_answers_with_the_contracts_columns() {
        let base = crate::postgres::server_url();
        let url = crate::postgres::create_database(&base, &crate::unique("support_m")).await;
        let pool = PgPool::connect(&url).await.unwrap();
        stub_one_meter(&pool, "M1", 0, 26_500, 2976).await;
        let row: (String, i64, i64, i64) = sqlx::query_as(
            "SELECT meter_id, start_volume_l, end_volume_l, reads \
               FROM metering.period_reads_v1('2026-10-01T00:00:00+09', '2026-11-01T00:00:00+09')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(row, ("M1".into(), 0, 26_500, 2976));
        pool.close().await;
        crate::postgres::drop_database(&base, &url).await;
    }
}
