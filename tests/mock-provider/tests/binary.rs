//! The `mock-provider` binary: prints its URL as the first stdout line,
//! honours its flags, and stops on SIGTERM.

use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn binary_announces_its_url_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-provider"))
        .args(["--listen", "127.0.0.1:0", "--default-output-tokens", "3"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let base_url = first.strip_prefix("listening on ").unwrap().to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{first}");

    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{base_url}/v1/chat/completions"))
        .bearer_auth("sk-test")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "w0 w1 w2");

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn binary_rejects_bad_rates() {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-provider"))
        .args(["--error-rate", "2"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("error_rate"));
}
