//! Unit tests of `queue`.

use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::Semaphore;

/// An exporter that answers from a script (then succeeds) and can be held shut.
#[derive(Default)]
struct Scripted {
    calls: Mutex<u64>,
    script: Mutex<VecDeque<ExportError>>,
    always_fail: Option<ExportError>,
    gate: Option<Arc<Semaphore>>,
}

impl Exporter for Scripted {
    fn export<'a>(
        &'a self,
        _data: &'a Payload,
    ) -> crate::component::BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            if let Some(g) = &self.gate {
                g.acquire().await.unwrap().forget();
            }
            *self.calls.lock().unwrap() += 1;
            if let Some(e) = &self.always_fail {
                return Err(e.clone());
            }
            match self.script.lock().unwrap().pop_front() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }
}

fn retryable() -> ExportError {
    ExportError {
        retryable: true,
        status: None,
        message: "backend answered Unavailable".into(),
        retry_after: None,
    }
}

fn spans(n: usize) -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); n],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        initial_interval: Duration::from_millis(1),
        max_interval: Duration::from_millis(2),
        ..RetryConfig::default()
    }
}

fn start(exp: Arc<Scripted>, q: QueueConfig, r: RetryConfig) -> (Arc<Delivery>, Arc<SelfMetrics>) {
    let metrics = Arc::new(SelfMetrics::new());
    let d = Delivery::start(&ComponentId("otlp".into()), exp, &q, r, metrics.clone()).unwrap();
    (d, metrics)
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn retries_retryable_failures_then_delivers_and_counts_per_pipeline() {
    let exp = Arc::new(Scripted::default());
    exp.script
        .lock()
        .unwrap()
        .extend([retryable(), retryable()]);
    let (d, m) = start(exp.clone(), QueueConfig::default(), fast_retry());
    d.submit("traces/a", spans(4)).await.unwrap();
    eventually("3 attempts", || *exp.calls.lock().unwrap() == 3).await;
    eventually("counted", || {
        m.encode().contains(
            r#"tollgate_exporter_sent_spans_total{exporter="otlp",pipeline="traces/a"} 4"#,
        )
    })
    .await;
    assert!(m
        .encode()
        .contains(r#"tollgate_exporter_retries_total{exporter="otlp",pipeline="traces/a"} 2"#));
    d.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_refuses_with_a_retry_delay_and_pipelines_share_it() {
    let gate = Arc::new(Semaphore::new(0));
    let exp = Arc::new(Scripted {
        gate: Some(gate.clone()),
        ..Default::default()
    });
    let q = QueueConfig {
        num_consumers: 1,
        queue_size: 2,
        ..QueueConfig::default()
    };
    let (d, m) = start(exp.clone(), q, fast_retry());
    d.submit("traces/a", spans(1)).await.unwrap();
    d.submit("traces/a", spans(1)).await.unwrap();
    let e = d.submit("traces/b", spans(3)).await.unwrap_err();
    assert!(e.retryable);
    assert_eq!(e.retry_after, Some(FULL_RETRY_AFTER));
    assert!(m.encode().contains(
        r#"tollgate_exporter_enqueue_failed_spans_total{exporter="otlp",pipeline="traces/b"} 3"#
    ));
    assert!(m
        .encode()
        .contains(r#"tollgate_exporter_queue_size{exporter="otlp"} 2"#));
    // The receiver turns it into RESOURCE_EXHAUSTED with RetryInfo, which an OTLP client
    // (and our own exporter) reads as retryable after that delay.
    let refused = crate::component::Refused {
        retryable: e.retryable,
        status: None,
        message: e.message.clone(),
        retry_after: e.retry_after,
    };
    let st = crate::receivers::otlp_grpc::refused_to_status(&refused);
    assert_eq!(st.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        crate::exporters::otlp::classify(&st),
        (true, Some(FULL_RETRY_AFTER))
    );
    let st =
        crate::receivers::otlp_grpc::refused_to_status(&crate::component::Refused::retryable("x"));
    assert_eq!(st.code(), tonic::Code::Unavailable);
    gate.add_permits(10);
    eventually("drained", || *exp.calls.lock().unwrap() == 2).await;
    d.shutdown().await;
}

#[tokio::test]
async fn the_default_queue_is_bounded_in_items_too() {
    // Defaults: 1000 requests, and 50,000 items whatever the request count.
    let q = QueueConfig::default();
    assert_eq!(
        (q.queue_size, q.sizer, q.max_items),
        (1000, Sizer::Requests, 50_000)
    );
    let gate = Arc::new(Semaphore::new(0));
    let exp = Arc::new(Scripted {
        gate: Some(gate.clone()),
        ..Default::default()
    });
    let (d, m) = start(exp.clone(), q, fast_retry());
    // Batches of 8192 spans (the batch processor's default): 6 × 8192 = 49,152 fit in
    // 50,000 spans, the 7th does not, although 7 requests are far below 1000.
    for _ in 0..6 {
        d.submit("traces", spans(8192)).await.unwrap();
    }
    let e = d.submit("traces", spans(8192)).await.unwrap_err();
    assert!(e.retryable);
    assert_eq!(e.retry_after, Some(FULL_RETRY_AFTER));
    // 50,000 − 49,152 = 848 spans of room: a request of 848 fits, then not one more span.
    d.submit("traces", spans(848)).await.unwrap();
    assert!(d.submit("traces", spans(1)).await.is_err());
    assert!(m.encode().contains(
        r#"tollgate_exporter_enqueue_failed_spans_total{exporter="otlp",pipeline="traces"} 8193"#
    ));
    // Once sent, the room is back.
    gate.add_permits(100);
    eventually("drained", || *exp.calls.lock().unwrap() == 7).await;
    eventually("room", || d.pending().0 == 0).await;
    d.submit("traces", spans(8192)).await.unwrap();
    d.shutdown().await;
}

#[test]
fn max_items_parses_and_defaults_per_sizer() {
    let parse_one = |yaml: &str| {
        let docs = yaml_rust2::YamlLoader::load_from_str(yaml).unwrap();
        let mut d = Diagnostics::default();
        let m = Map::new("exporters.otlp", &docs[0], &mut d).unwrap();
        let c = parse(&m, &mut d);
        (c, d)
    };
    let (c, _) = parse_one("endpoint: x\n");
    assert_eq!(c.max_items, 50_000);
    let (c, _) = parse_one("sending_queue: { queue_size: 10 }\n");
    assert_eq!((c.queue_size, c.max_items), (10, 50_000));
    let (c, _) = parse_one("sending_queue: { max_items: 2000 }\n");
    assert_eq!(c.max_items, 2000);
    // With sizer items, queue_size is the item bound.
    let (c, _) = parse_one("sending_queue: { sizer: items, queue_size: 100000000 }\n");
    assert_eq!(c.max_items, u64::MAX);
    let (c, _) = parse_one("sending_queue: { sizer: items, queue_size: 9000, max_items: 5000 }\n");
    assert_eq!((c.queue_size, c.max_items), (9000, 5000));
    let (_, d) = parse_one("sending_queue: { max_items: 0 }\n");
    assert!(
        d.problems().iter().any(|p| p
            .to_string()
            .starts_with("exporters.otlp.sending_queue.max_items: ")),
        "{:?}",
        d.problems()
    );
}

#[tokio::test]
async fn block_on_overflow_waits_for_room_instead_of_refusing() {
    let gate = Arc::new(Semaphore::new(0));
    let exp = Arc::new(Scripted {
        gate: Some(gate.clone()),
        ..Default::default()
    });
    let q = QueueConfig {
        num_consumers: 1,
        queue_size: 5,
        sizer: Sizer::Items,
        block_on_overflow: true,
        ..QueueConfig::default()
    };
    let (d, _m) = start(exp.clone(), q, fast_retry());
    d.submit("traces", spans(3)).await.unwrap();
    d.submit("traces", spans(2)).await.unwrap();
    let d2 = d.clone();
    // 3 + 2 + 3 items do not fit in 5; once the first 3 are sent, they do.
    let waiting = tokio::spawn(async move { d2.submit("traces", spans(3)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "waits while the queue is full");
    gate.add_permits(1);
    waiting.await.unwrap().unwrap();
    gate.add_permits(10);
    eventually("all sent", || *exp.calls.lock().unwrap() == 3).await;
    d.shutdown().await;
}

#[tokio::test]
async fn retry_now_cuts_short_the_wait_between_retries() {
    let exp = Arc::new(Scripted::default());
    exp.script.lock().unwrap().push_back(retryable());
    let slow = RetryConfig {
        initial_interval: Duration::from_secs(60),
        max_interval: Duration::from_secs(60),
        randomization_factor: 0.0,
        ..RetryConfig::default()
    };
    let (d, _m) = start(exp.clone(), QueueConfig::default(), slow);
    d.submit("traces", spans(1)).await.unwrap();
    eventually("first attempt", || *exp.calls.lock().unwrap() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        *exp.calls.lock().unwrap(),
        1,
        "waiting 60 s before the retry"
    );
    d.retry_now();
    eventually("retried at once", || *exp.calls.lock().unwrap() == 2).await;
    d.shutdown().await;
}

#[tokio::test]
async fn permanent_failures_are_not_retried_and_are_counted() {
    let exp = Arc::new(Scripted {
        always_fail: Some(ExportError {
            retryable: false,
            status: None,
            message: "backend answered InvalidArgument: bad".into(),
            retry_after: None,
        }),
        ..Default::default()
    });
    let (d, m) = start(exp.clone(), QueueConfig::default(), fast_retry());
    d.submit("traces", spans(2)).await.unwrap();
    eventually("counted", || {
        m.encode().contains(
            r#"tollgate_exporter_send_failed_spans_total{exporter="otlp",pipeline="traces"} 2"#,
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*exp.calls.lock().unwrap(), 1);
    d.shutdown().await;
}

#[tokio::test]
async fn without_the_queue_the_caller_waits_for_delivery_and_gets_the_failure() {
    let exp = Arc::new(Scripted::default());
    exp.script.lock().unwrap().push_back(retryable());
    let q = QueueConfig {
        enabled: false,
        ..QueueConfig::default()
    };
    let (d, _) = start(exp.clone(), q.clone(), fast_retry());
    d.submit("traces", spans(1)).await.unwrap();
    assert_eq!(*exp.calls.lock().unwrap(), 2, "retried inline");
    let exp = Arc::new(Scripted {
        always_fail: Some(retryable()),
        ..Default::default()
    });
    let no_retry = RetryConfig {
        enabled: false,
        ..fast_retry()
    };
    let (d, _) = start(exp.clone(), q, no_retry);
    let e = d.submit("traces", spans(1)).await.unwrap_err();
    assert!(e.retryable);
    assert_eq!(*exp.calls.lock().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_storage_what_cannot_be_sent_at_shutdown_stays_on_disk() {
    for ack in [AckMode::Durable, AckMode::Enqueued] {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageConfig {
            directory: dir.path().to_path_buf(),
            fsync: true,
            max_size: 1 << 30,
            segment_size: 1 << 20,
        };
        let exp = Arc::new(Scripted {
            always_fail: Some(retryable()),
            ..Default::default()
        });
        let q = QueueConfig {
            storage: Some(storage.clone()),
            ack,
            ..QueueConfig::default()
        };
        let (d, _) = start(exp.clone(), q, fast_retry());
        for _ in 0..3 {
            d.submit("traces", spans(2)).await.unwrap();
        }
        eventually("attempts", || *exp.calls.lock().unwrap() >= 3).await;
        d.shutdown().await;
        let (_s, rec) = Store::open(&storage).unwrap();
        assert_eq!(rec.records.len(), 3, "{ack:?}");
        assert!(rec.records.iter().all(|r| r.pipeline == "traces"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_bound_refuses_with_a_retryable_status() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let exp = Arc::new(Scripted {
        gate: Some(gate.clone()),
        ..Default::default()
    });
    let q = QueueConfig {
        storage: Some(StorageConfig {
            directory: dir.path().to_path_buf(),
            fsync: false,
            max_size: 4096,
            segment_size: 1024,
        }),
        ..QueueConfig::default()
    };
    let (d, m) = start(exp.clone(), q, fast_retry());
    let mut accepted = 0;
    let err = loop {
        match d.submit("traces", spans(20)).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "the disk bound never applied");
    };
    assert!(accepted > 0);
    assert!(err.retryable && err.retry_after.is_some(), "{err:?}");
    assert!(
        err.message.contains("persistent queue is full"),
        "{}",
        err.message
    );
    assert!(m.encode().contains(
        r#"tollgate_exporter_enqueue_failed_spans_total{exporter="otlp",pipeline="traces"} 20"#
    ));
    gate.add_permits(1000);
    eventually("sent", || *exp.calls.lock().unwrap() == accepted).await;
    d.shutdown().await;
}
