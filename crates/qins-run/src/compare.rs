//! The model-level fidelity report: a `.qins` against its source directory, both run through
//! the same code.
//!
//! Causal language models, as llama.cpp's `llama-perplexity --kl-divergence` reports them:
//! teacher-forced on a text, the KL divergence of the next-token distributions (source ‖ qins),
//! mean and max, the share of positions whose most likely token agrees, and the perplexity of
//! both; then free-running greedy generation per prompt, the share of identical tokens and the
//! first divergence.
//!
//! Greedy agreement measures luck as much as fidelity: where the source's two best tokens are
//! nearly tied, any perturbation may pick the other one, and the rest of the text then
//! differs. So each divergence (and each teacher-forced top-1 disagreement) comes with the
//! source's own margin there: its logit for its token minus its logit for the `.qins`'s token.
//! A divergence with a margin below [`CompareOptions::near_tie`] is counted as a near-tie, one
//! the source itself barely decided. Encoders: the cosine similarity of each sentence's two embeddings, and
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
    /// A divergence where the source's logit for its token exceeds its logit for the `.qins`'s
    /// token by less than this is a near-tie.
    pub near_tie: f64,
}

/// The default [`CompareOptions::near_tie`], in logits: the source prefers its token by less
/// than a factor e^0.1 = 1.105 in probability. It is about the largest change (p99: 0.097
/// logits) that the default codec makes to the gap between SmolLM2-135M's two most likely
/// tokens, teacher-forced: a gap below it may flip with any 8-bit codec.
pub const NEAR_TIE: f64 = 0.1;

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            prompts: builtin::PROMPTS.iter().map(|s| s.to_string()).collect(),
            tokens: 32,
            text: builtin::TEXT.to_string(),
            text_tokens: None,
            sentences: builtin::SENTENCES.iter().map(|s| s.to_string()).collect(),
            dtype: DType::F32,
            near_tie: NEAR_TIE,
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
    /// The near-tie threshold of this report, in logits ([`CompareOptions::near_tie`]).
    pub near_tie: f64,
    /// Prompts whose greedy outputs diverge.
    pub greedy_divergences: usize,
    /// Of those, the divergences at a near-tie of the source.
    pub greedy_divergences_at_near_ties: usize,
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
    /// Positions where they do not.
    pub top1_disagreements: usize,
    /// Of those, the positions where the source's margin over the `.qins`'s token is below
    /// the near-tie threshold.
    pub top1_disagreements_at_near_ties: usize,
    /// How much the `.qins` moves the gap between the source's two most likely tokens
    /// (|gap in the source - gap in the `.qins`|, in logits), mean over positions.
    pub top2_gap_change_mean: f64,
    /// The 99th percentile of that change.
    pub top2_gap_change_p99: f64,
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
    /// What happened there, when they differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    /// The source's text.
    pub source_text: String,
    /// The `.qins`'s text.
    pub qins_text: String,
}

/// The first token where the two greedy outputs differ.
#[derive(Clone, Debug, Serialize)]
pub struct Divergence {
    /// The position, in generated tokens.
    pub position: usize,
    /// The source's token there (its text; an end-of-sequence token by its name).
    pub source_token: String,
    /// The `.qins`'s token there.
    pub qins_token: String,
    /// The source's logit for its token minus its logit for the `.qins`'s token: how clearly
    /// the source itself decided. Below the near-tie threshold, the divergence tells little
    /// about the codec.
    pub source_margin: f64,
    /// The `.qins`'s logit for its token minus its logit for the source's token.
    pub qins_margin: f64,
    /// The rank of the `.qins`'s token among the source's logits (2: its second choice).
    pub qins_token_rank_in_source: usize,
    /// Whether `source_margin` is below the near-tie threshold.
    pub near_tie: bool,
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

/// The most likely token other than `best`.
fn second_best(x: &[f32], best: usize) -> Option<usize> {
    x.iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .fold(None, |b: Option<(usize, f32)>, (i, &v)| match b {
            Some((_, bv)) if bv >= v => b,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// The 99th percentile (nearest rank) of `x`, 0 when empty.
fn p99(x: &[f64]) -> f64 {
    let mut sorted = x.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(((sorted.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0)
}

/// The divergence at generated position `i`, from each model's logits at that step (`sa`:
/// the source's, `sb`: the `.qins`'s; both ran the same tokens up to it, so both have them).
/// The token each picked is the argmax of its logits: greedy decoding, end-of-sequence
/// tokens included.
fn divergence(
    source: &Model,
    i: usize,
    sa: &[Vec<f32>],
    sb: &[Vec<f32>],
    near_tie: f64,
) -> Result<Option<Divergence>, RunError> {
    let (Some(la), Some(lb)) = (sa.get(i), sb.get(i)) else {
        return Ok(None);
    };
    let (ta, tb) = (argmax(la), argmax(lb));
    let source_margin = f64::from(la[ta]) - f64::from(la[tb]);
    // An end-of-sequence token by its name (decoding leaves special tokens out).
    let text = |t: usize| match source.eos.contains(&(t as u32)) {
        true => Ok(source.tokenizer.id_to_token(t as u32).unwrap_or_default()),
        false => source.decode(&[t as u32]),
    };
    Ok(Some(Divergence {
        position: i,
        source_token: text(ta)?,
        qins_token: text(tb)?,
        source_margin,
        qins_margin: f64::from(lb[tb]) - f64::from(lb[ta]),
        qins_token_rank_in_source: 1 + la.iter().filter(|&&v| v > la[tb]).count(),
        near_tie: source_margin < near_tie,
    }))
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
    let (mut disagree_near_tie, mut gap_changes) = (0usize, Vec::new());
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
        let (ta, tb) = (argmax(&la), argmax(&lb));
        if ta == tb {
            agree += 1;
        } else if f64::from(la[ta] - la[tb]) < opts.near_tie {
            disagree_near_tie += 1;
        }
        if let Some(second) = second_best(&la, ta) {
            let gap = |l: &[f32]| f64::from(l[ta]) - f64::from(l[second]);
            gap_changes.push((gap(&la) - gap(&lb)).abs());
        }
        let next = pair[1] as usize;
        nll[0] -= pa.get(next).copied().unwrap_or(f64::NEG_INFINITY);
        nll[1] -= pb.get(next).copied().unwrap_or(f64::NEG_INFINITY);
    }
    let n = kls.len().max(1) as f64;
    let teacher_forced = TeacherForced {
        positions: kls.len(),
        kl_mean: mean(&kls),
        kl_max: kls.iter().copied().fold(0.0, f64::max),
        kl_p99: p99(&kls),
        top1_agreement: agree as f64 / n,
        top1_disagreements: kls.len() - agree,
        top1_disagreements_at_near_ties: disagree_near_tie,
        top2_gap_change_mean: mean(&gap_changes),
        top2_gap_change_p99: p99(&gap_changes),
        perplexity_source: (nll[0] / n).exp(),
        perplexity_qins: (nll[1] / n).exp(),
    };

    let mut greedy = Vec::new();
    for prompt in &opts.prompts {
        let ids = a.prompt_tokens(prompt, true)?;
        // Each step's logits, to tell at the divergence how clearly each model decided.
        let run = |m: &mut Model| -> Result<(crate::Generation, Vec<Vec<f32>>), RunError> {
            m.causal()?.reset()?;
            let mut steps = Vec::new();
            let g = crate::generate::generate_observed(
                m,
                &ids,
                0,
                opts.tokens,
                crate::Sampling::GREEDY,
                None,
                &mut |l| steps.push(l.to_vec()),
            )?;
            Ok((g, steps))
        };
        let ((ga, sa), (gb, sb)) = (run(a)?, run(b)?);
        let longest = ga.tokens.len().max(gb.tokens.len());
        let same = ga
            .tokens
            .iter()
            .zip(&gb.tokens)
            .filter(|(x, y)| x == y)
            .count();
        let first_divergence = (0..longest).find(|&i| ga.tokens.get(i) != gb.tokens.get(i));
        let divergence = match first_divergence {
            Some(i) => divergence(a, i, &sa, &sb, opts.near_tie)?,
            None => None,
        };
        greedy.push(GreedyPrompt {
            prompt: prompt.clone(),
            tokens: [ga.tokens.len(), gb.tokens.len()],
            identical_share: if longest == 0 {
                1.0
            } else {
                same as f64 / longest as f64
            },
            first_divergence,
            divergence,
            source_text: ga.text,
            qins_text: gb.text,
        });
    }
    let count = greedy.len().max(1) as f64;
    let divergences: Vec<&Divergence> = greedy
        .iter()
        .filter_map(|g| g.divergence.as_ref())
        .collect();
    Ok(CausalReport {
        near_tie: opts.near_tie,
        greedy_divergences: divergences.len(),
        greedy_divergences_at_near_ties: divergences.iter().filter(|d| d.near_tie).count(),
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
