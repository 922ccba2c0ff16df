//! Cost of minting and verifying one agent token (per algorithm). Run with
//! `cargo bench -p wombat-controlplane --bench jwt`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wombat_controlplane::jwt::{self, JwtAlgorithm, JwtConfig};

const NOW: u64 = 1_780_000_000;

fn bench(c: &mut Criterion) {
    for alg in [JwtAlgorithm::HS256, JwtAlgorithm::HS512] {
        let Ok(cfg) = JwtConfig::new("bench-secret-0123456789abcdef", alg) else {
            return;
        };
        c.bench_function(&format!("mint_{alg}"), |b| {
            b.iter(|| jwt::mint(&cfg, black_box("user-42"), black_box("agent"), None, NOW))
        });
        let Ok(token) = jwt::mint(&cfg, "user-42", "agent", None, NOW) else {
            return;
        };
        c.bench_function(&format!("verify_{alg}"), |b| {
            b.iter(|| jwt::verify(black_box(&token), &cfg, NOW + 1))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
