//! The web console of a real `weir serve`, driven in headless Chromium through
//! WebDriver (chromedriver, spoken to by fantoccini): known records and a
//! consumer group are made with librdkafka, then every page is opened and what
//! it shows is checked against what was made. Screenshots go to
//! `<target>/console-screenshots/`, and also to `WEIR_CONSOLE_SCREENSHOTS_DIR`
//! when set (relative to the repository root; `docs/console` feeds the README).
//!
//! Needs Debian's `chromium` and `chromium-driver`: without them the browser
//! tests print SKIPPED and pass, except under CI=true, where they fail. The
//! bad-input tests speak plain HTTP and need no browser.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::harness::{Broker, create_topic, free_port};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A script a hostile producer might store: if the console ever rendered it
/// as markup, it would retitle the page and set a global.
const HOSTILE_VALUE: &str = "<script>document.title='pwned';window.weirPwned=1;</script>\
     <img src=x onerror=\"window.weirPwned=2\"><b id=\"injected\">bold?</b>";

/// A bare HTTP/1.1 request: (status, lower-cased head, body).
fn http(addr: &str, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Waits until the HTTP listener answers.
fn wait_for_http(addr: &str) {
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no HTTP listener at {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver, or says why not: SKIPPED outside CI, a failure in CI.
fn driver_or_skip() -> Option<Driver> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the console's browser tests cannot run in CI: {missing:?} missing \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED console browser test: {missing:?} missing (apt-get install chromium chromium-driver)"
        );
        return None;
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(driver)
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,800",
                "--force-device-scale-factor=1",
                "--hide-scrollbars",
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session")
}

/// Where screenshots go: the target directory always, the repository too when asked.
fn screenshot_dirs() -> Vec<PathBuf> {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("console-screenshots");
    let mut dirs = vec![target];
    if let Some(dir) = std::env::var_os("WEIR_CONSOLE_SCREENSHOTS_DIR") {
        let dir = PathBuf::from(dir);
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        dirs.push(if dir.is_absolute() {
            dir
        } else {
            repo.join(dir)
        });
    }
    dirs
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    for dir in screenshot_dirs() {
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
    }
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn texts_of(client: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in client.find_all(Locator::Css(css)).await.expect("find_all") {
        out.push(e.text().await.expect("text"));
    }
    out
}

/// The rows of a table, each as its cells' texts.
async fn rows_of(client: &Client, table_css: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let rows = client
        .find_all(Locator::Css(&format!("{table_css} tbody tr")))
        .await
        .expect("rows");
    for row in rows {
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("th, td")).await.expect("cells") {
            cells.push(cell.text().await.expect("cell text"));
        }
        out.push(cells);
    }
    out
}

/// Records produced to `console-orders`: (partition, key, value).
fn order(i: usize) -> (i32, String, String) {
    (
        (i % 3) as i32,
        format!("order-key-{i}"),
        format!(r#"{{"order":{i},"item":"widget-{i}"}}"#),
    )
}
const ORDERS: usize = 30;
/// Bytes of the one large value (partition 0), over the page's cut of 1 KiB.
const LARGE_VALUE_BYTES: usize = 5000;
/// What the group commits on partition 0: lag there is its record count minus this.
const COMMITTED_P0: i64 = 4;

#[test]
fn console_pages_show_what_was_produced_in_a_real_browser() {
    let Some(driver) = driver_or_skip() else {
        return;
    };
    let http_addr = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start(&[
        "--http-listen",
        &http_addr,
        "--group-initial-rebalance-delay-ms",
        "0",
    ]);
    wait_for_http(&http_addr);
    create_topic(&broker, "console-orders", 3, &[("retention.ms", "3600000")]);
    create_topic(&broker, "console-xss", 1, &[]);

    let producer: BaseProducer = broker
        .client_config()
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in 0..ORDERS {
        let (partition, key, value) = order(i);
        let headers = OwnedHeaders::new().insert(Header {
            key: "source",
            value: Some("console-e2e"),
        });
        producer
            .send(
                BaseRecord::to("console-orders")
                    .partition(partition)
                    .key(&key)
                    .payload(&value)
                    .headers(headers),
            )
            .expect("enqueue");
        producer.poll(Duration::ZERO);
    }
    let large = "L".repeat(LARGE_VALUE_BYTES);
    producer
        .send(
            BaseRecord::to("console-orders")
                .partition(0)
                .key("large")
                .payload(&large),
        )
        .expect("enqueue large");
    producer
        .send(
            BaseRecord::to("console-xss")
                .partition(0)
                .key("<i>key</i>")
                .payload(HOSTILE_VALUE),
        )
        .expect("enqueue hostile");
    producer.flush(Duration::from_secs(30)).expect("flush");
    let per_partition = |p: i32| (0..ORDERS).filter(|i| order(*i).0 == p).count() as i64;
    let p0_records = per_partition(0) + 1;

    // A group member that stays in the group, with committed offsets.
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "console-group")
        .set("client.id", "console-e2e-client")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["console-orders"]).expect("subscribe");
    let started = Instant::now();
    while consumer.assignment().map_or(0, |a| a.count()) < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "no assignment");
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("console-orders", 0, Offset::Offset(COMMITTED_P0))
        .expect("offset");
    offsets
        .add_partition_offset("console-orders", 1, Offset::Offset(per_partition(1)))
        .expect("offset");
    offsets
        .add_partition_offset("console-orders", 2, Offset::Offset(per_partition(2)))
        .expect("offset");
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");

    let base = format!("http://{http_addr}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = browser(&driver).await;

        // Overview: health tiles, brokers, and the live chart drawn by the script.
        client.goto(&format!("{base}/")).await.expect("overview");
        assert_eq!(text_of(&client, "h1").await, "Overview");
        assert_eq!(text_of(&client, "#controller").await, "node 1");
        assert_eq!(text_of(&client, "#brokers-unfenced").await, "1 of 1");
        assert_eq!(text_of(&client, "#offline").await, "0");
        assert_eq!(text_of(&client, "#under-replicated").await, "0");
        let brokers = rows_of(&client, "section[aria-labelledby=brokers] table").await;
        assert_eq!(brokers.len(), 1, "{brokers:?}");
        assert!(brokers[0][0].starts_with('1'), "{brokers:?}");
        // The sampler reads every 2 s: two points need three readings, then the poll
        // (every 2 s) draws them as a line.
        client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css("#throughput-chart polyline.s0[points*=' ']"))
            .await
            .expect("the live throughput chart drew a line");
        let legend = texts_of(&client, "#throughput-chart figcaption .key").await;
        assert!(
            legend.len() == 2 && legend[0].starts_with("in: ") && legend[1].starts_with("out: "),
            "{legend:?}"
        );
        screenshot(&client, "overview").await;

        // Keyboard: the first Tab reaches the skip link.
        client
            .find(Locator::Css("body"))
            .await
            .expect("body")
            .send_keys("\u{E004}")
            .await
            .expect("tab");
        let focused = client
            .execute("return document.activeElement.textContent", vec![])
            .await
            .expect("active element");
        assert_eq!(focused, serde_json::json!("Skip to content"));

        // Topics list: partitions, RF and records as produced.
        client.goto(&format!("{base}/topics")).await.expect("topics");
        let rows = rows_of(&client, "#topics").await;
        let orders = rows
            .iter()
            .find(|r| r[0] == "console-orders")
            .unwrap_or_else(|| panic!("console-orders listed: {rows:?}"));
        assert_eq!(orders[1], "3", "partitions: {orders:?}");
        assert_eq!(orders[2], "1", "replication factor: {orders:?}");
        assert_eq!(orders[4], (ORDERS + 1).to_string(), "records: {orders:?}");
        assert!(rows.iter().any(|r| r[0] == "console-xss"), "{rows:?}");
        screenshot(&client, "topics").await;

        // Topic page: each partition's offsets, leader, replicas, ISR; configs with sources.
        client
            .find(Locator::LinkText("console-orders"))
            .await
            .expect("topic link")
            .click()
            .await
            .expect("open topic");
        assert_eq!(text_of(&client, "h1").await, "Topic console-orders");
        let partitions = rows_of(&client, "#partition-table").await;
        assert_eq!(partitions.len(), 3, "{partitions:?}");
        for (p, row) in partitions.iter().enumerate() {
            let expected_hw = per_partition(p as i32) + i64::from(p == 0);
            assert_eq!(row[0], p.to_string());
            assert_eq!(row[1], "0", "log start: {row:?}");
            assert_eq!(row[2], expected_hw.to_string(), "high watermark: {row:?}");
            assert_eq!(row[3], expected_hw.to_string(), "LSO: {row:?}");
            assert_eq!((&row[5][..], &row[6][..], &row[7][..]), ("1", "1", "1"), "{row:?}");
        }
        let configs = rows_of(&client, "#config-table").await;
        let config = |name: &str| {
            configs
                .iter()
                .find(|r| r[0] == name)
                .unwrap_or_else(|| panic!("{name} in {configs:?}"))
                .clone()
        };
        assert_eq!(config("retention.ms")[1..], ["3600000", "DYNAMIC_TOPIC_CONFIG"]);
        assert_eq!(config("cleanup.policy")[1..], ["delete", "DEFAULT_CONFIG"]);
        screenshot(&client, "topic").await;

        // Message browser: partition 1's records in order, with keys, values and headers.
        client
            .goto(&format!("{base}/messages?topic=console-orders&partition=1"))
            .await
            .expect("messages");
        let records = rows_of(&client, "#records").await;
        let expected: Vec<(String, String)> = (0..ORDERS)
            .map(order)
            .filter(|(p, _, _)| *p == 1)
            .map(|(_, k, v)| (k, v))
            .collect();
        assert_eq!(records.len(), expected.len(), "{records:?}");
        for (offset, (row, (key, value))) in records.iter().zip(&expected).enumerate() {
            assert_eq!(row[0], offset.to_string());
            assert!(row[1].contains("UTC") && row[1].contains("CreateTime"), "{row:?}");
            assert_eq!(&row[2], key);
            assert_eq!(&row[3], value);
            assert_eq!(row[4], "source: console-e2e");
        }
        // Search within the page hides the rows without the text.
        client
            .find(Locator::Css("#find"))
            .await
            .expect("search box")
            .send_keys("widget-4\"")
            .await
            .expect("type");
        let visible = client
            .execute(
                "return Array.from(document.querySelectorAll('#records tbody tr'))\
                 .filter(r => !r.hidden).map(r => r.querySelector('th').textContent)",
                vec![],
            )
            .await
            .expect("visible rows");
        assert_eq!(visible, serde_json::json!(["1"]), "only order 4 (offset 1) matches");
        assert_eq!(text_of(&client, "#find-count").await, format!("1 of {} records match", expected.len()));
        screenshot(&client, "messages").await;

        // Pretty JSON and hex views of the same page.
        client
            .goto(&format!("{base}/messages?topic=console-orders&partition=1&limit=1&format=json"))
            .await
            .expect("json view");
        let (_, _, first_value) = order(1);
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&first_value).unwrap(),
        )
        .unwrap();
        assert_eq!(text_of(&client, "#records td.value pre").await, pretty);
        // limit=1: a next page, at offset 1.
        let next = client
            .find(Locator::Css("a[rel=next]"))
            .await
            .expect("next link")
            .attr("href")
            .await
            .expect("href")
            .expect("an href");
        assert!(next.ends_with("&offset=1"), "{next}");
        client
            .goto(&format!("{base}/messages?topic=console-orders&partition=1&limit=1&format=hex"))
            .await
            .expect("hex view");
        let hex = text_of(&client, "#records td.key pre").await;
        assert!(hex.starts_with("00000000  6f 72 64 65 72"), "{hex}");

        // A value over the page's cut is cut, and its expansion shows all of it.
        let large_offset = per_partition(0);
        client
            .goto(&format!(
                "{base}/messages?topic=console-orders&partition=0&offset={large_offset}"
            ))
            .await
            .expect("large record");
        let cut = text_of(&client, "#records td.value pre").await;
        assert_eq!(cut.len(), 1024, "cut to the page's bound");
        client
            .find(Locator::LinkText("Expand"))
            .await
            .expect("expand link")
            .click()
            .await
            .expect("expand");
        assert_eq!(text_of(&client, "#records td.value pre").await, large);

        // A hostile value is text: no script ran, no element was made of it.
        client
            .goto(&format!("{base}/messages?topic=console-xss&partition=0"))
            .await
            .expect("hostile record");
        assert_eq!(text_of(&client, "#records td.value pre").await, HOSTILE_VALUE);
        assert_eq!(text_of(&client, "#records td.key pre").await, "<i>key</i>");
        let ran = client
            .execute(
                "return [document.title, typeof window.weirPwned, \
                 document.querySelectorAll('#records img, #records b, #records i, #injected').length]",
                vec![],
            )
            .await
            .expect("probe");
        assert_eq!(
            ran,
            serde_json::json!(["Messages in console-xss · Weir console", "undefined", 0])
        );
        screenshot(&client, "messages-hostile").await;

        // Groups: the list, then the group with its member, assignment, offsets and lag.
        client.goto(&format!("{base}/groups")).await.expect("groups");
        let groups = rows_of(&client, "#groups").await;
        let lag_p0 = p0_records - COMMITTED_P0;
        assert!(
            groups.iter().any(|g| g[0] == "console-group"
                && g[1] == "Stable"
                && g[3] == "1"
                && g[4] == lag_p0.to_string()),
            "{groups:?}"
        );
        screenshot(&client, "groups").await;
        client
            .find(Locator::LinkText("console-group"))
            .await
            .expect("group link")
            .click()
            .await
            .expect("open group");
        assert_eq!(text_of(&client, "#group-state").await, "Stable");
        assert_eq!(text_of(&client, "#total-lag").await, lag_p0.to_string());
        let members = rows_of(&client, "#member-table").await;
        assert_eq!(members.len(), 1, "{members:?}");
        assert_eq!(members[0][1], "console-e2e-client");
        assert_eq!(members[0][3], "console-orders [0, 1, 2]");
        let offsets = rows_of(&client, "#offset-table").await;
        assert_eq!(
            offsets,
            (0..3)
                .map(|p| {
                    let hw = per_partition(p) + i64::from(p == 0);
                    let committed = if p == 0 { COMMITTED_P0 } else { hw };
                    vec![
                        "console-orders".to_string(),
                        p.to_string(),
                        committed.to_string(),
                        hw.to_string(),
                        (hw - committed).to_string(),
                    ]
                })
                .collect::<Vec<_>>()
        );
        let legend = texts_of(&client, "section[aria-labelledby=lag] figcaption .key").await;
        assert_eq!(legend, vec![format!("total lag: {lag_p0}")]);
        // The lag ring samples every 10 s: once it holds this group, the chart has
        // the ring's points and the current one, a line at the committed lag.
        let started = Instant::now();
        loop {
            client.refresh().await.expect("reload group");
            if client
                .find(Locator::Css("section[aria-labelledby=lag] polyline.s0"))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the lag ring never sampled the group"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            texts_of(&client, "section[aria-labelledby=lag] .tick").await.first().map(String::as_str),
            Some(lag_p0.to_string().as_str()),
            "the chart's scale tops at the lag"
        );
        screenshot(&client, "group").await;

        // Reassignments: none on one broker, said plainly.
        client.goto(&format!("{base}/reassignments")).await.expect("reassignments");
        assert!(text_of(&client, "#no-reassignments").await.starts_with("None"));
        screenshot(&client, "reassignments").await;

        // Phone width: the page fits (tables scroll inside their box).
        client.set_window_size(390, 844).await.expect("phone size");
        client.goto(&format!("{base}/topics")).await.expect("topics on a phone");
        let fits = client
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth",
                vec![],
            )
            .await
            .expect("width");
        assert_eq!(fits, serde_json::json!(true), "no sideways scrolling of the page");
        screenshot(&client, "topics-phone").await;

        client.close().await.expect("close browser");
    });
    drop(consumer);
}

#[test]
fn console_answers_bad_input_with_a_400_page_and_stays_read_only() {
    let http_addr = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start(&["--http-listen", &http_addr]);
    wait_for_http(&http_addr);
    create_topic(&broker, "console-bad", 2, &[]);
    let producer: BaseProducer = broker.client_config().create().expect("producer");
    for i in 0..5 {
        producer
            .send(
                BaseRecord::<(), _>::to("console-bad")
                    .partition(0)
                    .payload(&format!("v{i}")),
            )
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    let bad_requests = [
        (
            "/messages?topic=console-bad&partition=abc",
            "\"partition\" must be a whole number",
        ),
        (
            "/messages?topic=console-bad&partition=-1",
            "\"partition\" must be between 0 and",
        ),
        (
            "/messages?topic=console-bad&partition=2",
            "partition 2 of &quot;console-bad&quot; does not exist",
        ),
        (
            "/messages?topic=console-bad&partition=99999999999",
            "must be between 0 and 2147483647",
        ),
        (
            "/messages?topic=console-bad&offset=1e3",
            "\"offset\" must be a whole number",
        ),
        (
            "/messages?topic=console-bad&offset=-5",
            "\"offset\" must be between 0 and",
        ),
        (
            "/messages?topic=console-bad&offset=6",
            "offset 6 is outside the readable range 0..5",
        ),
        (
            "/messages?topic=console-bad&limit=100000",
            "\"limit\" must be between 1 and 100",
        ),
        (
            "/messages?topic=console-bad&timestamp=yesterday",
            "\"timestamp\" must be a time like",
        ),
        (
            "/messages?topic=console-bad&timestamp=2026-02-31T00:00",
            "\"timestamp\" must be a time like",
        ),
        (
            "/messages?topic=console-bad&offset=1&timestamp=0",
            "not both",
        ),
        (
            "/messages?topic=console-bad&format=%3Cscript%3E",
            "must be one of text, json, hex, not &quot;&lt;script&gt;&quot;",
        ),
        (
            "/messages?topic=%3Cscript%3Ealert(1)%3C/script%3E",
            "is not a valid topic name",
        ),
        ("/messages?topic=a%ZZ", "malformed percent-escape"),
        ("/messages?topic=a%FF", "not UTF-8"),
        (
            "/messages/record?topic=console-bad&partition=0",
            "\"offset\" is required",
        ),
        ("/topics/bad%2Fname", "is not a valid topic name"),
        (
            "/topics/%3Cimg%20src=x%20onerror=alert(1)%3E",
            "is not a valid topic name",
        ),
        ("/topics/..", "is not a valid topic name"),
        ("/topics?page=0", "\"page\" must be between 1 and"),
        ("/topics?page=two", "\"page\" must be a whole number"),
        ("/topics?page=7", "page 7 does not exist; there are 1"),
        ("/groups?page=-3", "\"page\" must be between 1 and"),
        ("/groups/%FF%FE", "not valid UTF-8"),
    ];
    for (path, says) in bad_requests {
        let (status, head, body) = http(&http_addr, "GET", path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            head.contains("content-type: text/html; charset=utf-8"),
            "{path}: {head}"
        );
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{path}: {head}"
        );
        assert!(body.contains("<h1>Bad request</h1>"), "{path}: {body}");
        let says = says.replace('"', "&quot;");
        assert!(body.contains(&says), "{path} should say {says:?}: {body}");
        // Whatever the URL held comes back escaped: the only tags are the page's own.
        for injected in ["<script>alert", "<img", "onerror=alert(1)>"] {
            assert!(!body.contains(injected), "{path}: {body}");
        }
    }

    let not_found = [
        (
            "/topics/no-such-topic",
            "topic &quot;no-such-topic&quot; does not exist",
        ),
        (
            "/messages?topic=no-such-topic",
            "topic &quot;no-such-topic&quot; does not exist",
        ),
        (
            "/groups/no-such-group",
            "group &quot;no-such-group&quot; is not coordinated",
        ),
        (
            "/messages/record?topic=console-bad&partition=0&offset=5",
            "no record at offset 5",
        ),
    ];
    for (path, says) in not_found {
        let (status, _, body) = http(&http_addr, "GET", path);
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
        assert!(body.contains(says), "{path} should say {says:?}: {body}");
    }

    // Good input still works: a time before every record starts at offset 0.
    let (status, _, body) = http(
        &http_addr,
        "GET",
        "/messages?topic=console-bad&timestamp=1970-01-01T00:00",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Showing 5 records from offset 0"), "{body}");

    // Read-only: nothing but GET is routed.
    for (method, path) in [
        ("POST", "/topics"),
        ("DELETE", "/topics/console-bad"),
        ("PUT", "/groups/g"),
        ("POST", "/messages"),
    ] {
        let (status, _, _) = http(&http_addr, method, path);
        assert_eq!(status, 405, "{method} {path}");
    }
}

#[test]
fn topic_page_of_1000_partitions_loads_in_under_a_second() {
    const PARTITIONS: i32 = 1000;
    let http_addr = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start(&["--http-listen", &http_addr]);
    wait_for_http(&http_addr);
    create_topic(&broker, "console-wide", PARTITIONS, &[]);
    // CreateTopics answers once the controller committed the topic; the broker then
    // opens 1,000 logs. The page is timed once they are all open (every partition
    // shows a log in the JSON API), so the figure is the page's, not the creation's.
    let started = Instant::now();
    loop {
        let (status, _, body) = http(&http_addr, "GET", "/v1/topics/console-wide");
        if status == 200 && body.matches("\"log\":{").count() == PARTITIONS as usize {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "logs never all open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut timings_ms = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, _, body) = http(&http_addr, "GET", "/topics/console-wide");
        let took = started.elapsed();
        assert_eq!(status, 200);
        assert_eq!(
            body.matches("<tr><th scope=\"row\" class=\"num\">").count(),
            PARTITIONS as usize,
            "every partition on the page"
        );
        timings_ms.push(took.as_secs_f64() * 1000.0);
    }
    let started = Instant::now();
    let (status, _, _) = http(&http_addr, "GET", "/topics");
    let list_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(status, 200);
    eprintln!(
        "console: /topics/console-wide ({PARTITIONS} partitions) answered in {:.1} ms first, \
         then {:.1} and {:.1} ms; /topics in {list_ms:.1} ms",
        timings_ms[0], timings_ms[1], timings_ms[2]
    );
    for ms in timings_ms {
        assert!(ms < 1000.0, "the 1,000-partition page took {ms:.0} ms");
    }
}
