//! The model-level fidelity report: a `.qins` against its source directory, both run through
//! the same code.
//!
//! Causal language models, as llama.cpp's `llama-perplexity --kl-divergence` reports them:
//! teacher-forced on a text, the KL divergence of the next-token distributions (source ‖ qins),
//! mean and max, the share of positions whose most likely token agrees, and the perplexity of
//! both; then free-running greedy generation per prompt, the share of identical tokens and the
//! first divergence. Encoders: the cosine similarity of each sentence's two embeddings, and
//! whether each sentence's nearest neighbour among the others is the same under both.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::DType;
use serde::Serialize;

use crate::builtin;
use crate::model::Model;
use crate::RunError;

/// What to compare on.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Prompts for the greedy comparison.
    pub prompts: Vec<String>,
    /// Greedy tokens per prompt.
    pub tokens: usize,
    /// Teacher-forced text (the built-in text by default).
    pub text: String,
    /// At most this many tokens of the text are scored (all if `None`).
    pub text_tokens: Option<usize>,
    /// Sentences for encoders.
    pub sentences: Vec<String>,
    /// The dtype both models are loaded in.
    pub dtype: DType,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            prompts: builtin::PROMPTS.iter().map(|s| s.to_string()).collect(),
            tokens: 32,
            text: builtin::TEXT.to_string(),
            text_tokens: None,
            sentences: builtin::SENTENCES.iter().map(|s| s.to_string()).collect(),
            dtype: DType::F32,
        }
    }
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The `.qins` file.
    pub qins: PathBuf,
    /// The source directory.
    pub source: PathBuf,
    /// The architecture (`model_type`).
    pub architecture: &'static str,
    /// The dtype both ran in.
    pub dtype: &'static str,
    /// Seconds to load the source and the `.qins`.
    pub load_s: [f64; 2],
    /// Seconds the comparison took after loading.
    pub compare_s: f64,
    /// Figures for a causal language model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causal: Option<CausalReport>,
    /// Figures for an encoder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderReport>,
}

/// Figures for a causal language model.
#[derive(Clone, Debug, Serialize)]
pub struct CausalReport {
    /// Teacher-forced on the text.
    pub teacher_forced: TeacherForced,
    /// Free-running greedy, per prompt.
    pub greedy: Vec<GreedyPrompt>,
    /// Mean over prompts of the share of identical tokens.
    pub greedy_identical_mean: f64,
    /// Prompts whose greedy outputs are identical.
    pub greedy_identical_prompts: usize,
}

/// Teacher-forced figures.
#[derive(Clone, Debug, Serialize)]
pub struct TeacherForced {
    /// Positions scored (next-token predictions).
    pub positions: usize,
    /// Mean KL divergence, source ‖ qins, in nats.
    pub kl_mean: f64,
    /// Largest KL divergence at one position.
    pub kl_max: f64,
    /// 99th percentile of the KL divergence.
    pub kl_p99: f64,
    /// Share of positions where both predict the same most likely token.
    pub top1_agreement: f64,
    /// Perplexity of the source on the text.
    pub perplexity_source: f64,
    /// Perplexity of the `.qins` on the text.
    pub perplexity_qins: f64,
}

/// Greedy generation from one prompt.
#[derive(Clone, Debug, Serialize)]
pub struct GreedyPrompt {
    /// The prompt.
    pub prompt: String,
    /// Tokens generated from the source, and from the `.qins`.
    pub tokens: [usize; 2],
    /// Positions with the same token, over the longer of the two outputs.
    pub identical_share: f64,
    /// The first position where the outputs differ (`None`: identical).
    pub first_divergence: Option<usize>,
    /// The source's text.
    pub source_text: String,
    /// The `.qins`'s text.
    pub qins_text: String,
}

/// Figures for an encoder.
#[derive(Clone, Debug, Serialize)]
pub struct EncoderReport {
    /// Sentences embedded.
    pub sentences: usize,
    /// Embedding size.
    pub dimensions: usize,
    /// The modules after the encoder.
    pub modules: Vec<String>,
    /// Mean cosine similarity between a sentence's two embeddings.
    pub cosine_mean: f64,
    /// Smallest such cosine similarity.
    pub cosine_min: f64,
    /// Largest difference of one component.
    pub max_abs_diff: f64,
    /// Share of sentences whose nearest neighbour (among the others) is the same under both.
    pub nearest_neighbour_agreement: f64,
    /// Share of sentences whose nearest neighbour is in their own topic, source and `.qins`
    /// (meaningful for the built-in sentences only).
    pub nearest_in_topic: [f64; 2],
}

/// Runs the comparison of the `.qins` at `qins` against the directory `source`.
pub fn compare(
    qins: &std::path::Path,
    source: &std::path::Path,
    opts: &CompareOptions,
) -> Result<Report, RunError> {
    let mut a = Model::open(source, opts.dtype)?;
    let mut b = Model::open(qins, opts.dtype)?;
    if a.arch != b.arch {
        return Err(RunError::Mismatch {
            a: b.path.clone(),
            b: a.path.clone(),
            what: format!("architectures {} and {}", b.arch.name(), a.arch.name()),
        });
    }
    let start = Instant::now();
    let (causal, encoder) = if a.arch.is_causal() {
        (Some(compare_causal(&mut a, &mut b, opts)?), None)
    } else {
        (None, Some(compare_encoders(&a, &b, opts)?))
    };
    Ok(Report {
        qins: b.path.clone(),
        source: a.path.clone(),
        architecture: a.arch.name(),
        dtype: opts.dtype.as_str(),
        load_s: [a.load_time.as_secs_f64(), b.load_time.as_secs_f64()],
        compare_s: start.elapsed().as_secs_f64(),
        causal,
        encoder,
    })
}

/// `x - logsumexp(x)`, in f64.
fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn mismatch(a: &Model, b: &Model, what: String) -> RunError {
    RunError::Mismatch {
        a: b.path.clone(),
        b: a.path.clone(),
        what,
    }
}

fn compare_causal(
    a: &mut Model,
    b: &mut Model,
    opts: &CompareOptions,
) -> Result<CausalReport, RunError> {
    let mut tokens = a.encode(&opts.text, true)?;
    if let Some(n) = opts.text_tokens {
        tokens.truncate(n.max(2));
    }
    a.causal()?.reset()?;
    b.causal()?.reset()?;
    let (mut kls, mut agree, mut nll) = (Vec::new(), 0usize, [0f64; 2]);
    for (i, pair) in tokens.windows(2).enumerate() {
        let la = a.causal()?.forward(&pair[..1], i)?;
        let lb = b.causal()?.forward(&pair[..1], i)?;
        if la.len() != lb.len() {
            return Err(mismatch(
                a,
                b,
                format!("vocabularies of {} and {}", lb.len(), la.len()),
            ));
        }
        let (pa, pb) = (log_softmax(&la), log_softmax(&lb));
        let kl: f64 = pa.iter().zip(&pb).map(|(&x, &y)| x.exp() * (x - y)).sum();
        kls.push(kl.max(0.0));
        agree += usize::from(argmax(&la) == argmax(&lb));
        let next = pair[1] as usize;
        nll[0] -= pa.get(next).copied().unwrap_or(f64::NEG_INFINITY);
        nll[1] -= pb.get(next).copied().unwrap_or(f64::NEG_INFINITY);
    }
    let n = kls.len().max(1) as f64;
    let mut sorted = kls.clone();
    sorted.sort_by(f64::total_cmp);
    let teacher_forced = TeacherForced {
        positions: kls.len(),
        kl_mean: kls.iter().sum::<f64>() / n,
        kl_max: sorted.last().copied().unwrap_or(0.0),
        kl_p99: sorted
            .get(((sorted.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0),
        top1_agreement: agree as f64 / n,
        perplexity_source: (nll[0] / n).exp(),
        perplexity_qins: (nll[1] / n).exp(),
    };

    let mut greedy = Vec::new();
    for prompt in &opts.prompts {
        let ids = a.prompt_tokens(prompt, true)?;
        let run = |m: &mut Model| -> Result<crate::Generation, RunError> {
            m.causal()?.reset()?;
            crate::generate::generate(m, &ids, 0, opts.tokens, crate::Sampling::GREEDY, None)
        };
        let (ga, gb) = (run(a)?, run(b)?);
        let longest = ga.tokens.len().max(gb.tokens.len());
        let same = ga
            .tokens
            .iter()
            .zip(&gb.tokens)
            .filter(|(x, y)| x == y)
            .count();
        let first_divergence = (0..longest).find(|&i| ga.tokens.get(i) != gb.tokens.get(i));
        greedy.push(GreedyPrompt {
            prompt: prompt.clone(),
            tokens: [ga.tokens.len(), gb.tokens.len()],
            identical_share: if longest == 0 {
                1.0
            } else {
                same as f64 / longest as f64
            },
            first_divergence,
            source_text: ga.text,
            qins_text: gb.text,
        });
    }
    let count = greedy.len().max(1) as f64;
    Ok(CausalReport {
        greedy_identical_mean: greedy.iter().map(|g| g.identical_share).sum::<f64>() / count,
        greedy_identical_prompts: greedy
            .iter()
            .filter(|g| g.first_divergence.is_none())
            .count(),
        teacher_forced,
        greedy,
    })
}

fn cosine(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum();
    let nx: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    let ny: f64 = y.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    if nx == 0.0 || ny == 0.0 {
        0.0
    } else {
        dot / (nx * ny)
    }
}

/// The index of each embedding's nearest neighbour among the others, by cosine.
fn nearest(e: &[Vec<f32>]) -> Vec<usize> {
    (0..e.len())
        .map(|i| {
            (0..e.len())
                .filter(|&j| j != i)
                .map(|j| (j, cosine(&e[i], &e[j])))
                .fold((i, f64::NEG_INFINITY), |best, (j, c)| {
                    if c > best.1 {
                        (j, c)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

fn compare_encoders(
    a: &Model,
    b: &Model,
    opts: &CompareOptions,
) -> Result<EncoderReport, RunError> {
    let ea = a.encoder()?.embed(&a.tokenizer, &opts.sentences)?;
    let eb = b.encoder()?.embed(&b.tokenizer, &opts.sentences)?;
    let cos: Vec<f64> = ea.iter().zip(&eb).map(|(x, y)| cosine(x, y)).collect();
    let n = cos.len().max(1) as f64;
    let max_abs_diff = ea
        .iter()
        .zip(&eb)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(&p, &q)| (p as f64 - q as f64).abs()))
        .fold(0.0, f64::max);
    let (na, nb) = (nearest(&ea), nearest(&eb));
    let agree = na.iter().zip(&nb).filter(|(x, y)| x == y).count();
    let in_topic = |nn: &[usize]| {
        nn.iter()
            .enumerate()
            .filter(|(i, &j)| builtin::sentence_group(*i) == builtin::sentence_group(j))
            .count() as f64
            / n
    };
    Ok(EncoderReport {
        sentences: cos.len(),
        dimensions: ea.first().map_or(0, Vec::len),
        modules: a.encoder()?.module_names(),
        cosine_mean: cos.iter().sum::<f64>() / n,
        cosine_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
        max_abs_diff,
        nearest_neighbour_agreement: agree as f64 / n,
        nearest_in_topic: [in_topic(&na), in_topic(&nb)],
    })
}
