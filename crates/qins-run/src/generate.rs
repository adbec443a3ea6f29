//! Text generation: prompt, sampling with candle-transformers' `LogitsProcessor`, a token
//! stream that prints text as it decodes, and the timings users ask for.

use std::io::Write;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use serde::Serialize;

use crate::error::compute;
use crate::model::Model;
use crate::RunError;

/// How to pick the next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; `None` or 0 means greedy (the most likely token).
    pub temperature: Option<f64>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `p`.
    pub top_p: Option<f64>,
    /// Seed of the sampler's random numbers.
    pub seed: u64,
    /// Penalty for tokens already in the context (1.0: none).
    pub repeat_penalty: f32,
}

impl Sampling {
    /// Greedy decoding.
    pub const GREEDY: Sampling = Sampling {
        temperature: None,
        top_p: None,
        seed: 0,
        repeat_penalty: 1.0,
    };
}

/// Turns tokens into printable text as they come: a token's text is given out once the tokens
/// so far decode to more complete text than before (a character split over several byte tokens
/// waits for its last byte), as candle-examples' `TokenOutputStream` does.
#[derive(Debug, Default)]
pub struct TokenStream {
    tokens: Vec<u32>,
    printed: usize,
}

impl TokenStream {
    /// Adds `token`; returns the new text it completes, if any.
    pub fn push(&mut self, model: &Model, token: u32) -> Result<Option<String>, RunError> {
        self.tokens.push(token);
        let text = model.decode(&self.tokens)?;
        if text.len() > self.printed
            && !text.ends_with('\u{FFFD}')
            && text.is_char_boundary(self.printed)
        {
            let new = text[self.printed..].to_string();
            self.printed = text.len();
            return Ok(Some(new));
        }
        Ok(None)
    }
}

/// What a generation did.
#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Whether an end-of-sequence token stopped it (else the token limit).
    pub stopped_at_eos: bool,
    /// Time from the start of the prompt to the first generated token, in seconds.
    pub time_to_first_token_s: f64,
    /// Generated tokens per second after the first.
    pub tokens_per_s: f64,
}

/// Generates up to `max_tokens` tokens after `prompt` (token ids, positions from `pos`; the
/// model's cache must hold `pos` positions), writing the text to `out` as it decodes when
/// `out` is given.
pub fn generate(
    model: &mut Model,
    prompt: &[u32],
    pos: usize,
    max_tokens: usize,
    sampling: Sampling,
    out: Option<&mut dyn Write>,
) -> Result<Generation, RunError> {
    generate_observed(model, prompt, pos, max_tokens, sampling, out, &mut |_| {})
}

/// [`generate()`], handing `observe` the next-token logits of every step (before any penalty
/// or sampling), including the step that picks an end-of-sequence token.
pub(crate) fn generate_observed(
    model: &mut Model,
    prompt: &[u32],
    pos: usize,
    max_tokens: usize,
    sampling: Sampling,
    mut out: Option<&mut dyn Write>,
    observe: &mut dyn FnMut(&[f32]),
) -> Result<Generation, RunError> {
    let mut processor = LogitsProcessor::new(sampling.seed, sampling.temperature, sampling.top_p);
    let eos = model.eos.clone();
    let start = Instant::now();
    let mut first: Option<Duration> = None;
    let mut generated: Vec<u32> = Vec::new();
    let mut context: Vec<u32> = prompt.to_vec();
    let mut input: Vec<u32> = prompt.to_vec();
    let mut at = pos;
    let mut stopped = false;
    let mut stream = TokenStream::default();
    while generated.len() < max_tokens {
        let logits = model.causal()?.forward(&input, at)?;
        at += input.len();
        observe(&logits);
        let n = logits.len();
        let mut logits =
            Tensor::from_vec(logits, n, &Device::Cpu).map_err(compute("reading the logits"))?;
        if sampling.repeat_penalty != 1.0 {
            logits = candle_transformers::utils::apply_repeat_penalty(
                &logits,
                sampling.repeat_penalty,
                &context,
            )
            .map_err(compute("the repeat penalty"))?;
        }
        let next = processor.sample(&logits).map_err(compute("sampling"))?;
        first.get_or_insert_with(|| start.elapsed());
        if eos.contains(&next) {
            stopped = true;
            break;
        }
        generated.push(next);
        context.push(next);
        input = vec![next];
        if let Some(out) = out.as_deref_mut() {
            if let Some(text) = stream.push(model, next)? {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
        }
    }
    let total = start.elapsed();
    let ttft = first.unwrap_or(total);
    let after = generated.len().saturating_sub(1);
    let rest = (total - ttft).as_secs_f64();
    Ok(Generation {
        text: model.decode(&generated)?,
        prompt_tokens: prompt.len(),
        stopped_at_eos: stopped,
        time_to_first_token_s: ttft.as_secs_f64(),
        tokens_per_s: if rest > 0.0 { after as f64 / rest } else { 0.0 },
        tokens: generated,
    })
}
