//! Envelopes across processes and languages: a Python issuer and a Python queue worker
//! (separate processes, the OpenTelemetry Python SDK, the `tollgate_envelope` SDK) send
//! through tollgate to a recording backend. Also: the CLI against the shared vectors, and
//! key material never appearing in any output at trace log level.

mod common;

use std::process::{Command, Stdio};

use common::*;

const SECRET_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_issuer_and_worker_processes_are_attributed_across_a_queue_hop() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k1.hex");
    std::fs::write(&key, SECRET_HEX).unwrap();
    let (backend, baddr) = start_backend().await;
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols: {{ grpc: {{ endpoint: \"127.0.0.1:0\" }} }}\nprocessors:\n  envelope:\n    keys:\n      - id: k1\n        secret_file: {}\n    identity_attributes:\n      tenant.id: tenant_id\nexporters:\n  otlp: {{ endpoint: \"{baddr}\", tls: {{ insecure: true }} }}\nservice:\n  telemetry: {{ metrics: {{ level: none }} }}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [envelope]\n      exporters: [otlp]\n",
        key.display()
    );
    let gw = start_gateway(&yaml).await;
    let endpoint = gw.endpoint("otlp", "grpc").unwrap().to_string();
    let queue = dir.path().join("message.json");
    let s = |p: &std::path::Path| p.display().to_string();
    let issuer = vec![
        s(&repo().join("tests/python/envelope_issuer.py")),
        endpoint.clone(),
        s(&key),
        s(&queue),
    ];
    run_python(issuer).await;
    let worker = vec![
        s(&repo().join("tests/python/envelope_worker.py")),
        endpoint,
        s(&queue),
    ];
    run_python(worker).await;
    backend
        .wait_for(10, "three spans", |b| b.spans().len() == 3)
        .await;

    let spans = backend.spans();
    let get = |name: &str| spans.iter().find(|s| s.name == name).cloned().unwrap();
    let a1 = get("llm attempt 1");
    let a2 = get("llm attempt 2");
    let rw = get("llm rewritten");
    for s in [&a1, &a2] {
        assert_eq!(
            attr_str(&s.attributes, "tollgate.envelope.status").as_deref(),
            Some("valid"),
            "{}",
            s.name
        );
        assert_eq!(
            attr_str(&s.attributes, "tollgate.tenant.id").as_deref(),
            Some("acme")
        );
        assert_eq!(
            attr_str(&s.attributes, "tollgate.operation.id").as_deref(),
            Some("answer-ticket-42")
        );
    }
    assert_eq!(attr_int(&a1.attributes, "tollgate.lineage.depth"), Some(0));
    assert_eq!(attr_int(&a2.attributes, "tollgate.lineage.depth"), Some(1));
    assert_eq!(
        attr_str(&rw.attributes, "tollgate.envelope.status").as_deref(),
        Some("claims_mismatch")
    );
    assert_eq!(
        attr_str(&rw.attributes, "tollgate.tenant.id").as_deref(),
        Some("__unattributed__")
    );
    gw.shutdown().await;
}

#[test]
fn cli_verify_agrees_with_every_shared_vector() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/vectors/envelope-v1.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ring = String::from("keys:\n");
    for k in v["keys"].as_array().unwrap() {
        let id = k["id"].as_str().unwrap();
        let path = dir.path().join(format!("{id}.hex"));
        std::fs::write(&path, k["secret_hex"].as_str().unwrap()).unwrap();
        ring.push_str(&format!(
            "  - id: {id}\n    secret_file: {}\n    status: {}\n",
            path.display(),
            k["status"].as_str().unwrap()
        ));
        for b in ["not_before", "not_after"] {
            if let Some(t) = k[b].as_i64() {
                ring.push_str(&format!("    {b}: {t}\n"));
            }
        }
    }
    let ring_path = dir.path().join("ring.yaml");
    std::fs::write(&ring_path, ring).unwrap();
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        let tok = case["token"].as_str().unwrap();
        // Cross-check cases need span attributes; the CLI checks the token itself.
        if case
            .get("cross_check")
            .and_then(|c| c.as_object())
            .is_some_and(|o| !o.is_empty())
        {
            continue;
        }
        let out = Command::new(bin())
            .args(["envelope", "verify", "--keys"])
            .arg(&ring_path)
            .arg("--span-start")
            .arg(case["span_start"].as_i64().unwrap().to_string())
            .arg("--skew")
            .arg(format!("{}s", case["skew"].as_i64().unwrap()))
            .arg("--")
            .arg(tok)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let expected = case["expected_status"].as_str().unwrap();
        assert!(
            stdout.contains(&format!("status: {expected}")),
            "case {}: expected {expected}, got:\n{stdout}{}",
            case["name"],
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.success(),
            expected == "valid",
            "case {}",
            case["name"]
        );
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} cases checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_material_never_appears_in_any_output_at_trace_level() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use tollgate::envelope::token;

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k1.hex");
    std::fs::write(&key, SECRET_HEX).unwrap();
    let secret = [0x5au8; 32];
    let (backend, baddr) = start_backend().await;
    let port = free_port();
    let cfg = dir.path().join("tollgate.yaml");
    let out_file = dir.path().join("spans.jsonl");
    std::fs::write(
        &cfg,
        format!(
            "receivers:\n  otlp:\n    protocols: {{ grpc: {{ endpoint: \"127.0.0.1:{port}\" }} }}\nprocessors:\n  envelope:\n    keys:\n      - id: k1\n        secret_file: {}\n    max_ingest_delay: 87600h\nexporters:\n  otlp: {{ endpoint: \"{baddr}\", tls: {{ insecure: true }} }}\n  file: {{ path: {} }}\n  debug: {{ verbosity: detailed }}\nservice:\n  telemetry: {{ logs: {{ level: trace }}, metrics: {{ level: none }} }}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [envelope]\n      exporters: [otlp, file, debug]\n",
            key.display(),
            out_file.display()
        ),
    )
    .unwrap();
    // Logs go to files: a pipe nobody reads would fill up at trace level and stall the process.
    let (out_log, err_log) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::from(std::fs::File::create(&out_log).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_log).unwrap()))
        .spawn()
        .unwrap();
    let mut client = None;
    for _ in 0..200 {
        if let Ok(c) = TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let mut client = client.expect("tollgate started");
    let claims = token::Claims {
        tenant_id: "acme".into(),
        originator_id: "u".into(),
        workflow_id: "w".into(),
        operation_id: "o".into(),
        issuance_id: "i".into(),
        issued_at: 1_795_392_000,
        expires_at: 1_795_395_600,
    };
    let good = token::sign(&secret, "k1", &claims).unwrap();
    let bad = token::sign(&[1u8; 32], "k1", &claims).unwrap();
    let spans = [good, bad, "tg1.k1.x.y.z".into()]
        .iter()
        .enumerate()
        .map(|(i, t)| Span {
            trace_id: vec![1; 16],
            span_id: vec![i as u8 + 1; 8],
            name: "s".into(),
            start_time_unix_nano: 1_795_392_100 * 1_000_000_000,
            attributes: vec![kv_str("tollgate.envelope", t)],
            ..Default::default()
        })
        .collect();
    client
        .export(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    // Trigger a reload (SIGHUP) with a bad new ring, and a validate run.
    std::fs::write(&key, "0011").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(backend.spans().len(), 3);
    let tenant_key = token::derive_tenant_key(&secret, "acme");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let outputs = [
        std::fs::read_to_string(&out_log).unwrap(),
        std::fs::read_to_string(&err_log).unwrap(),
        std::fs::read_to_string(&out_file).unwrap(),
    ];
    let stderr = &outputs[1];
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "ran at trace level"
    );
    assert!(
        stderr.contains("key ring reload rejected"),
        "reload error is reported"
    );
    // The debug exporter (verbosity: detailed) prints a summary and each span with attributes.
    assert!(
        stderr.contains("tollgate::debug") && stderr.contains("items=3"),
        "debug summary line"
    );
    assert!(
        stderr.contains("tollgate.envelope.status=\"valid\""),
        "debug detailed attributes"
    );
    for o in &outputs {
        assert!(!o.to_lowercase().contains(SECRET_HEX), "secret hex leaked");
        assert!(!o.contains("ZZZZZZZZZZZZZZZZ"), "secret bytes leaked");
        assert!(!o.contains(&hex(&tenant_key)), "derived tenant key leaked");
    }
}

/// Runs `tollgate envelope <args>` with `input` on stdin; returns (exit ok, stdout lines).
fn cli_batch(args: &[&str], input: &str) -> (bool, Vec<String>) {
    use std::io::Write;
    let mut child = Command::new(bin())
        .arg("envelope")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (
        out.status.success(),
        stdout.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn cli_batch_modes_sign_append_and_verify_the_shared_vectors_in_one_process_each() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/vectors/envelope-v1.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ring = String::from("keys:\n");
    for k in v["keys"].as_array().unwrap() {
        let id = k["id"].as_str().unwrap();
        let path = dir.path().join(format!("{id}.hex"));
        std::fs::write(&path, k["secret_hex"].as_str().unwrap()).unwrap();
        ring.push_str(&format!(
            "  - id: {id}\n    secret_file: {}\n    status: {}\n",
            path.display(),
            k["status"].as_str().unwrap()
        ));
        for b in ["not_before", "not_after"] {
            if let Some(t) = k[b].as_i64() {
                ring.push_str(&format!("    {b}: {t}\n"));
            }
        }
    }
    let ring_path = dir.path().join("ring.yaml");
    std::fs::write(&ring_path, ring).unwrap();
    let ring_arg = ring_path.display().to_string();
    let cases = v["cases"].as_array().unwrap();

    // verify --batch: one JSON line per token, same status as the vector, for every case that
    // shares the span start and skew of the first (the batch takes one --span-start).
    let (span, skew) = (cases[0]["span_start"].as_i64().unwrap(), 300);
    let batch: Vec<&serde_json::Value> = cases
        .iter()
        .filter(|c| {
            c["span_start"].as_i64() == Some(span)
                && c["skew"].as_i64() == Some(skew)
                && c["cross_check"].as_object().is_none_or(|o| o.is_empty())
                && !c["token"].as_str().unwrap().contains('\n')
        })
        .collect();
    assert!(batch.len() >= 20, "only {} cases", batch.len());
    let input: String = batch
        .iter()
        .map(|c| format!("{}\n", c["token"].as_str().unwrap()))
        .collect();
    let (ok, lines) = cli_batch(
        &[
            "verify",
            "--batch",
            "--keys",
            &ring_arg,
            "--span-start",
            &span.to_string(),
            "--skew",
            "300s",
        ],
        &input,
    );
    assert!(!ok, "some vectors are not valid, so the exit code is 1");
    assert_eq!(lines.len(), batch.len());
    let mut statuses = std::collections::BTreeSet::new();
    for (case, line) in batch.iter().zip(&lines) {
        let got: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(got["status"], case["expected_status"], "{}", case["name"]);
        statuses.insert(got["status"].as_str().unwrap().to_owned());
        if got["status"] == "valid" {
            for f in tollgate::envelope::token::CLAIM_FIELDS {
                assert_eq!(got["claims"][f], case["claims"][f], "{} {f}", case["name"]);
            }
            assert_eq!(got["kid"], case["kid"]);
            assert_eq!(
                got["hops"].as_array().unwrap().len(),
                case["hops"].as_array().unwrap().len()
            );
        } else {
            assert!(got["stage"].is_string() && got["detail"].is_string());
        }
    }
    assert!(statuses.len() >= 5, "{statuses:?}");

    // sign --batch and append --batch rebuild every canonical active-key vector byte for byte.
    let canonical: Vec<&serde_json::Value> = cases
        .iter()
        .filter(|c| c["canonical"] == true && c["kid"] == "k-active")
        .collect();
    assert!(canonical.len() >= 3);
    let key_file = dir.path().join("k-active.hex").display().to_string();
    let mut input: String = canonical
        .iter()
        .map(|c| format!("{}\n", c["claims"]))
        .collect();
    input.push_str("{\"tenant_id\":\"a b\"}\n");
    let (ok, signed) = cli_batch(
        &[
            "sign",
            "--batch",
            "--key-file",
            &key_file,
            "--kid",
            "k-active",
        ],
        &input,
    );
    assert!(!ok, "the last line is an error");
    assert_eq!(signed.len(), canonical.len() + 1);
    assert!(
        signed[canonical.len()].starts_with("error: "),
        "{}",
        signed[canonical.len()]
    );
    let mut tokens: Vec<String> = signed[..canonical.len()].to_vec();
    let max_hops = canonical
        .iter()
        .map(|c| c["hops"].as_array().unwrap().len())
        .max()
        .unwrap();
    assert!(max_hops >= 2);
    for round in 0..max_hops {
        let idx: Vec<usize> = (0..canonical.len())
            .filter(|&i| canonical[i]["hops"].as_array().unwrap().len() > round)
            .collect();
        let input: String = idx
            .iter()
            .map(|&i| {
                format!(
                    "{} {}\n",
                    tokens[i],
                    canonical[i]["hops"][round].as_str().unwrap()
                )
            })
            .collect();
        let (ok, out) = cli_batch(&["append", "--batch"], &input);
        assert!(ok);
        assert_eq!(out.len(), idx.len());
        for (&i, t) in idx.iter().zip(out) {
            tokens[i] = t;
        }
    }
    for (c, t) in canonical.iter().zip(&tokens) {
        assert_eq!(t, c["token"].as_str().unwrap(), "{}", c["name"]);
    }
    let (ok, out) = cli_batch(
        &["append", "--batch"],
        &format!("{} {{\"kind\":\"re try\"}}\nno-space-here\n", tokens[0]),
    );
    assert!(!ok);
    assert!(out[0].starts_with("error: invalid hop: hop.kind: value outside"));
    assert!(out[1].starts_with("error: expected TOKEN, a space"));
}
