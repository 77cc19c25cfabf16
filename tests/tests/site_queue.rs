//! A site's queue, driven directly: a job offered at the moment an operator pauses the site is
//! either refused or handed back with the rest of the queue (never left in the queue of a
//! paused site, where no connection serves it and no expiry or drain reaches it); and the
//! return slots handed to refused jobs start over once the site's queue has run dry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hikyaku_engine::control::campaigns::CampaignStates;
use hikyaku_engine::message::dkim::DkimKeys;
use hikyaku_engine::message::Renderer;
use hikyaku_engine::metrics::Metrics;
use hikyaku_engine::outcome::report::Reporter;
use hikyaku_engine::routing::mx::HickoryLookup;
use hikyaku_engine::site::connect::{Connector, Target};
use hikyaku_engine::site::events::SiteEvents;
use hikyaku_engine::site::policy::SitePolicy;
use hikyaku_engine::site::{Routed, Site, SiteDeps};
use hikyaku_engine::work::Work;
use hikyaku_tests::queue::job;
use hikyaku_tests::redis::TestRedis;

/// The two tests run one at a time: the race needs the machine's cores to itself.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A site named `race` with the default site's policy (rate `rate` msg/s when given), whose
/// connections reach nothing (port 9), reporting into `tx`; its campaign states.
async fn site(
    redis: &TestRedis,
    rate: Option<f64>,
) -> (
    Arc<Site>,
    Arc<CampaignStates>,
    tokio::sync::mpsc::UnboundedReceiver<hikyaku_engine::outcome::report::Done>,
) {
    let con = redis.con().await;
    let (tx, results) = tokio::sync::mpsc::unbounded_channel();
    let states = Arc::new(CampaignStates::default());
    let (events, _writer) = SiteEvents::to_redis(con.clone());
    let deps = SiteDeps {
        connector: Connector {
            lookup: Arc::new(
                HickoryLookup::new(
                    Some(SocketAddr::from(([127, 0, 0, 1], 9))),
                    Duration::from_millis(100),
                )
                .expect("resolver"),
            ),
            ehlo: "engine.test".into(),
            tls: None,
        },
        renderer: Arc::new(Renderer::new(
            con.clone(),
            states.clone(),
            Arc::new(DkimKeys::default()),
        )),
        reporter: Reporter::new(vec![tx], Metrics),
        campaigns: states.clone(),
        events,
        suppressed: Arc::default(),
        fleet: None,
    };
    let mut policy = SitePolicy::shipped_defaults()["default"].clone();
    policy.name = "race".into();
    if let Some(r) = rate {
        policy.rate = hikyaku_engine::units::Rate::per_second(r);
    }
    (Site::new(policy, deps), states, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_racing_a_pause_is_never_stranded() {
    let _alone = ALONE.lock().await;
    let redis = TestRedis::start();
    let (site, states, mut results) = site(&redis, None).await;
    let target = Arc::new(Target {
        hosts: vec!["127.0.0.1".into()],
        port: 9,
    });
    let handle = tokio::runtime::Handle::current();
    // Each round lines an offer and a pause up behind the queue's lock in the order a loaded
    // node may run them: the offer has seen the site running and waits for the lock; the pause
    // has set its flag and waits for the lock to hand the queue back. The lock is let go and
    // taken again at once, so the offer (woken first) finds it taken and waits again behind
    // the pause: the pause empties the queue first, the offer comes after it.
    let rounds = 20u64;
    let mut accepted = 0;
    let mut stranded = 0;
    for i in 0..rounds {
        let work = Work {
            hold: states.hold(1),
            shard: 0,
            entry: format!("1-{i}").into(),
            job: job(i, "a@race.test"),
            redelivered: false,
        };
        let lock = site.hold_queue_lock();
        let offer = {
            let (site, handle, target) = (site.clone(), handle.clone(), target.clone());
            std::thread::spawn(move || {
                let _rt = handle.enter();
                site.offer(Routed { work, target }).is_ok()
            })
        };
        std::thread::sleep(Duration::from_millis(5));
        let pause = {
            let (site, handle) = (site.clone(), handle.clone());
            std::thread::spawn(move || {
                let _rt = handle.enter();
                site.set_paused(true);
            })
        };
        std::thread::sleep(Duration::from_millis(5));
        drop(lock);
        let lock = site.hold_queue_lock();
        std::thread::sleep(Duration::from_millis(5));
        drop(lock);
        if offer.join().expect("offer") {
            accepted += 1;
        }
        pause.join().expect("pause");
        // A paused site holds nothing.
        if site.queued() > 0 {
            stranded += 1;
        }
        site.set_paused(false);
    }
    // Every accepted job was handed back to the retry set by the pause (none is in the queue).
    let mut handed_back = 0;
    while let Ok(done) = results.try_recv() {
        drop(done);
        handed_back += 1;
    }
    assert_eq!(stranded, 0, "jobs left in a paused site's queue");
    assert_eq!(site.queued(), 0);
    assert!(
        handed_back >= accepted,
        "{handed_back} handed back of {accepted} accepted"
    );
}

/// A long backlog pushed the site's return slots minutes ahead; once its queue has run dry, a
/// job refused again is due back when the queue drains, not after the old backlog's slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_slots_start_over_once_the_queue_ran_dry() {
    let _alone = ALONE.lock().await;
    let redis = TestRedis::start();
    let (site, states, _results) = site(&redis, Some(20.0)).await;
    let mut last = Duration::ZERO;
    for _ in 0..5_000 {
        last = site.refusal_delay(Duration::ZERO);
    }
    assert!(
        last > Duration::from_secs(200),
        "a backlog's slots: {last:?}"
    );
    // One job: a connection takes it (its server is unreachable, it is deferred) and finds the
    // queue empty.
    let work = Work {
        hold: states.hold(1),
        shard: 0,
        entry: "1-1".into(),
        job: job(1, "a@race.test"),
        redelivered: false,
    };
    let target = Arc::new(Target {
        hosts: vec!["127.0.0.1".into()],
        port: 9,
    });
    assert!(site.offer(Routed { work, target }).is_ok());
    hikyaku_tests::wait_for(Duration::from_secs(10), "the queue ran dry", || {
        let site = site.clone();
        async move { (site.queued() == 0).then_some(()) }
    })
    .await;
    // The failed connect backs off half a second before the connection looks again; the
    // queue counts as dry once it has stayed empty for two seconds. Empty for a moment (as
    // between two batches) it is not: the backlog's slots still hold.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let brief = site.refusal_delay(Duration::ZERO);
    assert!(
        brief > Duration::from_secs(200),
        "empty for a moment is not dry: {brief:?}"
    );
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let next = site.refusal_delay(Duration::ZERO);
    assert!(
        next <= Duration::from_secs(3),
        "due when the (empty) queue drains, not behind the old slots: {next:?}"
    );
}
