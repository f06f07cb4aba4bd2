use did_core::sync::{Session, SyncConfig, SyncIndex};
use did_core::Cid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn run(a: &SyncIndex, b: &SyncIndex, config: SyncConfig) -> (u32, u64) {
    let (mut sa, mut sb) = (Session::new(config), Session::new(config));
    let mut msg = sa.initiate(a);
    let mut to_b = true;
    loop {
        let next = if to_b { sb.handle(b, &msg) } else { sa.handle(a, &msg) };
        match next.unwrap() { Some(m) => msg = m, None => break }
        to_b = !to_b;
    }
    (sa.stats().messages_sent + sb.stats().messages_sent, sa.stats().bytes_sent + sb.stats().bytes_sent)
}

#[test]
fn experiment() {
    let b_: usize = std::env::var("B").map(|v| v.parse().unwrap()).unwrap_or(16);
    let t: usize = std::env::var("T").map(|v| v.parse().unwrap()).unwrap_or(16);
    let m: usize = std::env::var("M").map(|v| v.parse().unwrap()).unwrap_or(65536);
    let cfg = SyncConfig { branching: b_, items_threshold: t, max_message_bytes: m, ..Default::default() };
    for diff in [1usize, 10, 100, 1000, 10000] {
        let mut rng = StdRng::seed_from_u64(diff as u64);
        let shared: SyncIndex = (0..100_000).map(|_| Cid(rng.gen())).collect();
        let (mut a, mut b) = (shared.clone(), shared);
        for i in 0..diff { let c = Cid(rng.gen()); if i % 2 == 0 { a.insert(c); } else { b.insert(c); } }
        let t0 = std::time::Instant::now();
        let (msgs, bytes) = run(&a, &b, cfg);
        println!("B={b_} T={t} M={m} diff={diff:>6} msgs={msgs:>4} bytes={bytes:>8} per={:>7.1} {:?}", bytes as f64 / diff as f64, t0.elapsed());
    }
}
