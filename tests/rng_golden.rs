//! `RandomState(seed).randn(...)` against values recorded from numpy itself (tests/golden/numpy_randn.json).

mod common;
use serde_json::Value;
use sg2::rng::{randn_tensor, RandomState};

fn golden() -> serde_json::Map<String, Value> {
    let path = common::golden("numpy_randn.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match serde_json::from_str(&text).unwrap() {
        Value::Object(m) => m,
        other => panic!("{}: expected an object, got {other}", path.display()),
    }
}

/// The recorded IEEE-754 bit patterns (16 hex digits each), parsed here so no JSON float rounding is involved.
fn bits(v: &Value) -> Vec<u64> {
    v["bits"]
        .as_array()
        .expect("bits array")
        .iter()
        .map(|h| {
            let h = h.as_str().expect("hex string");
            assert_eq!(h.len(), 16, "bit pattern {h:?}");
            u64::from_str_radix(h, 16).unwrap_or_else(|e| panic!("bit pattern {h:?}: {e}"))
        })
        .collect()
}

#[test]
fn randn_512_matches_numpy_bit_for_bit() {
    let g = golden();
    assert_eq!(g.len(), 5, "seeds in the golden file");
    for (seed, entry) in &g {
        let seed: u32 = seed.parse().unwrap();
        let expected = bits(entry);
        assert_eq!(expected.len(), 512);
        let got: Vec<u64> = RandomState::new(seed).randn(512).iter().map(|x| x.to_bits()).collect();
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "seed {seed} value {i}: {} vs numpy {}", f64::from_bits(*g), f64::from_bits(*e));
        }
        // The decimal values agree with the bit patterns (guards against a mislabelled file).
        let decimals = entry["values"].as_array().unwrap();
        assert!(decimals.iter().zip(&expected).all(|(d, e)| (d.as_f64().unwrap() - f64::from_bits(*e)).abs() < 1e-12));
    }
}

#[test]
fn randn_1000_starts_like_randn_512() {
    for (seed, entry) in &golden() {
        let seed: u32 = seed.parse().unwrap();
        let expected = bits(&entry["randn1000_first10"]);
        assert_eq!(expected.len(), 10);
        let got = RandomState::new(seed).randn(1000);
        let got: Vec<u64> = got[..10].iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, expected, "seed {seed}");
    }
}

#[test]
fn randn_tensor_is_numpy_z_cast_to_float32() {
    // z = RandomState(6600).randn(2, 256).astype(np.float32): numpy rounds each float64 to nearest.
    let expected = bits(&golden()["6600"]);
    let z = randn_tensor(&mut RandomState::new(6600), &[2, 256]);
    assert_eq!(z.size(), [2, 256]);
    let flat = Vec::<f32>::try_from(z.flatten(0, -1)).unwrap();
    for (i, (got, e)) in flat.iter().zip(&expected).enumerate() {
        let e = f64::from_bits(*e);
        let want = e as f32;
        assert_eq!(got.to_bits(), want.to_bits(), "element {i}");
        // Round to nearest: no other float32 is closer to the float64 value.
        let up = f32::from_bits(want.to_bits() + 1) as f64;
        assert!((f64::from(want) - e).abs() <= (up - e).abs());
    }
}

#[test]
fn z_of_the_golden_networks_comes_from_the_seed() {
    // The reference drew z = RandomState(seed).randn(1, z_dim) per seed, cast to float32.
    for (net, z_dim) in [("tiny32", 64), ("tiny64", 128)] {
        let io = common::golden_io(net);
        let seeds = Vec::<i64>::try_from(&io["seeds"]).unwrap();
        let z = &io["z"];
        assert_eq!(z.size(), [seeds.len() as i64, z_dim]);
        for (i, &seed) in seeds.iter().enumerate() {
            let ours = randn_tensor(&mut RandomState::new(seed as u32), &[1, z_dim]);
            let same = ours.eq_tensor(&z.narrow(0, i as i64, 1)).all().int64_value(&[]) == 1;
            assert!(same, "{net}: z of seed {seed} differs");
        }
    }
}
