//! The ratios' denominator: raw sequential publish-and-await (`raw_seq`), sampled several times
//! through a run because it moves with the disk's fsync within minutes.

use std::time::Duration;

use async_nats::jetstream;
use serde_json::{json, Value};

use super::baselines::raw_sequential;

/// The raw sequential baseline's samples through the run, in messages/s.
#[derive(Debug, Default)]
pub(super) struct RawSeqSamples(Vec<(&'static str, f64)>);

impl RawSeqSamples {
    /// Measures one sample of `d` on the raw stream and prints it.
    pub(super) async fn sample(
        &mut self,
        js: &jetstream::Context,
        when: &'static str,
        d: Duration,
    ) -> anyhow::Result<f64> {
        let ps = raw_sequential(js, d).await?;
        println!("raw sequential publish-and-await, {when:<22} {ps:>9.0}/s");
        self.0.push((when, ps));
        Ok(ps)
    }

    /// The median of the samples (the mean of the middle two for an even count); 0 when none.
    pub(super) fn median(&self) -> f64 {
        let mut v: Vec<f64> = self.0.iter().map(|(_, ps)| *ps).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// How many samples were taken.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// `{when: messages/s}` for the JSON line.
    pub(super) fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(w, ps)| (w.to_string(), json!(ps.round())))
                .collect(),
        )
    }
}

/// The mean of `samples` (those taken beside one stage); 0 when none.
pub(super) fn mean(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        0.0
    } else {
        samples.iter().sum::<f64>() / samples.len() as f64
    }
}

/// `figure / baseline` to two decimals; 0 when the baseline is 0.
pub(super) fn ratio(figure: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        (figure / baseline * 100.0).round() / 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::{mean, ratio, RawSeqSamples};

    #[test]
    fn the_baselines_median_and_the_samples_beside_a_stage() {
        let mut s = RawSeqSamples::default();
        assert_eq!(s.median(), 0.0);
        s.0.push(("at the start", 677.0));
        s.0.push(("after the store stages", 2_233.0));
        s.0.push(("before order/create", 2_071.0));
        assert_eq!(s.median(), 2_071.0);
        s.0.push(("after order/create", 1_900.0));
        assert_eq!(s.median(), (1_900.0 + 2_071.0) / 2.0);
        assert_eq!(mean(&[2_071.0, 1_900.0]), (2_071.0 + 1_900.0) / 2.0);
        assert_eq!(mean(&[]), 0.0);
        assert_eq!(s.to_json()["at the start"], 677.0);
        assert_eq!(ratio(2_077.0, 2_071.0), 1.0);
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
