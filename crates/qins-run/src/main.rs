//! `qins-run`: runs a model from a `.qins` file or a Hugging Face directory (the same code for
//! both), and compares the two. A thin wrapper over the `qins_run` library.
//!
//! Exit status: 0 on success, 1 when the input is refused or the run fails (one line naming the
//! file and the cause), 2 for usage errors.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::DType;
use clap::{Parser, Subcommand, ValueEnum};
use qins_run::{compare, generate, CompareOptions, Message, Model, Sampling};
use serde_json::json;

/// Run a model from its .qins file or its Hugging Face directory, and check that the .qins
/// still behaves like the original.
#[derive(Debug, Parser)]
#[command(name = "qins-run", version, about, long_about, after_long_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "\
Architectures (config.json model_type): llama, mistral, qwen2, qwen3, gemma3_text, phi3 (causal
language models: generate, compare) and bert (sentence-transformers encoders: embed, compare).
Config, tokenizer, chat template and generation defaults come from the model's own files (in a
.qins, its assets). A model stored as a set of shards is opened from its index or any shard;
every shard must be there. Weights are decoded tensor by tensor from the mapped file, each verified
against its checksums first: a damaged tensor stops the run before anything is computed.

Examples:
  qins-run generate model.qins --prompt 'What is the capital of France?'
  qins-run generate model.qins --chat
  qins-run embed minilm.qins --text 'A first sentence.' --text 'A second one.'
  qins-run compare model.qins HF_DIR --json";

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text from a prompt (or chat interactively with --chat).
    Generate(GenerateArgs),
    /// Print sentence embeddings (sentence-transformers encoders).
    Embed(EmbedArgs),
    /// Compare a .qins with its source directory at the level of the model's outputs.
    Compare(CompareArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DtypeArg {
    F32,
    Bf16,
}

impl DtypeArg {
    fn dtype(self) -> DType {
        match self {
            DtypeArg::F32 => DType::F32,
            DtypeArg::Bf16 => DType::BF16,
        }
    }
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// A .qins file, a set's index (NAME.qins.index.json) or any of its shards, or a Hugging
    /// Face model directory.
    model: PathBuf,
    /// The prompt (with --chat: the first message; without it, required).
    #[arg(long, short, required_unless_present = "chat")]
    prompt: Option<String>,
    /// Tokens to generate at most.
    #[arg(long, short = 'n', default_value_t = 128, value_name = "N")]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy. Default: generation_config.json's when it samples,
    /// else greedy.
    #[arg(long, value_name = "T")]
    temperature: Option<f64>,
    /// Nucleus sampling threshold. Default: generation_config.json's.
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 299_792_458, value_name = "S")]
    seed: u64,
    /// Penalty for repeating tokens of the context (1.0: none).
    #[arg(long, default_value_t = 1.0, value_name = "R")]
    repeat_penalty: f32,
    /// Interactive chat on stdin with the model's chat template, keeping the conversation.
    #[arg(long)]
    chat: bool,
    /// Generate exactly --max-tokens tokens, past end-of-sequence tokens (for benchmarks).
    #[arg(long)]
    ignore_eos: bool,
    /// Do not apply the chat template to --prompt (plain completion).
    #[arg(long, conflicts_with = "chat")]
    raw: bool,
    /// The dtype the weights are decoded into and the model computes in.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// Print the result and timings as JSON (no streaming).
    #[arg(long, conflicts_with = "chat")]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct EmbedArgs {
    /// A .qins file (a set's index or any shard) or a Hugging Face model directory of a
    /// sentence-transformers encoder.
    model: PathBuf,
    /// A sentence to embed. Repeatable.
    #[arg(long, short, required = true, value_name = "TEXT")]
    text: Vec<String>,
    /// The dtype the weights are decoded into.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// Print the embeddings as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// The .qins file (a set's index or any shard).
    qins: PathBuf,
    /// Its source Hugging Face directory.
    hf_dir: PathBuf,
    /// Prompts for the greedy comparison, one per line (default: 8 built-in prompts).
    #[arg(long, value_name = "FILE")]
    prompts: Option<PathBuf>,
    /// Greedy tokens per prompt.
    #[arg(long, default_value_t = 32, value_name = "N")]
    tokens: usize,
    /// Score at most N tokens of the built-in text (default: all of it, about 400).
    #[arg(long, value_name = "N")]
    text_tokens: Option<usize>,
    /// A divergence where the source prefers its token over the .qins's by less than this
    /// many logits is reported as a near-tie (the source itself barely decided).
    #[arg(long, default_value_t = qins_run::compare::NEAR_TIE, value_name = "LOGITS", value_parser = logits)]
    near_tie: f64,
    /// The dtype both models run in.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// Print every figure as JSON.
    #[arg(long)]
    json: bool,
    /// Also write every figure as JSON to FILE (the same report as --json), whatever goes to
    /// stdout. The file is written beside its target and renamed into place when complete.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
}

/// Writes `value` as pretty JSON to `path`: into a new file beside it, renamed into place
/// when complete, so that `path` is never left half-written (on failure the new file is
/// removed and an earlier `path` is kept).
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = || format!("{}: cannot write the JSON report", path.display());
    let mut file = tempfile::Builder::new()
        .prefix(".qins-run-")
        .suffix(".json.partial")
        .tempfile_in(dir)
        .with_context(fail)?;
    serde_json::to_writer_pretty(&mut file, value).with_context(fail)?;
    file.write_all(b"\n").with_context(fail)?;
    file.persist(path).map_err(|e| e.error).with_context(fail)?;
    Ok(())
}

/// A number of logits: finite, 0 or more.
fn logits(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a number of logits (0 or more)")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => run_generate(a),
        Command::Embed(a) => run_embed(a),
        Command::Compare(a) => run_compare(a),
    }
}

fn open(path: &Path, dtype: DType) -> Result<Model> {
    Model::open(path, dtype).with_context(|| format!("loading {}", path.display()))
}

fn sampling(a: &GenerateArgs, model: &Model) -> Sampling {
    let (t, p) = model.sampling.unwrap_or((0.0, None));
    Sampling {
        temperature: Some(a.temperature.unwrap_or(t)),
        top_p: a.top_p.or(p),
        seed: a.seed,
        repeat_penalty: a.repeat_penalty,
    }
}

fn run_generate(a: GenerateArgs) -> Result<()> {
    qins_run::model::require_kind(&a.model, true, "generate")?;
    let mut model = open(&a.model, a.dtype.dtype())?;
    model.causal()?;
    if a.ignore_eos {
        model.eos.clear();
    }
    let sampling = sampling(&a, &model);
    let source = if model.is_qins { ".qins" } else { "directory" };
    if a.chat {
        return chat_loop(&mut model, &a, sampling);
    }
    let prompt = a.prompt.as_deref().unwrap_or_default();
    let ids = model.prompt_tokens(prompt, !a.raw)?;
    let mut stdout = std::io::stdout().lock();
    if a.json {
        let g = generate(&mut model, &ids, 0, a.max_tokens, sampling, None)?;
        let out = json!({
            "model": model.path,
            "source": source,
            "architecture": model.arch.name(),
            "dtype": model.dtype.as_str(),
            "load_s": model.load_time.as_secs_f64(),
            "tensors": model.stats.tensors,
            "parameters": model.stats.elements,
            "prompt": prompt,
            "generation": g,
        });
        writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    eprintln!(
        "loaded {} ({}, {}) in {:.2} s: {} tensors, {:.1} M parameters",
        model.path.display(),
        model.arch.name(),
        source,
        model.load_time.as_secs_f64(),
        model.stats.tensors,
        model.stats.elements as f64 / 1e6
    );
    let g = generate(
        &mut model,
        &ids,
        0,
        a.max_tokens,
        sampling,
        Some(&mut stdout),
    )?;
    writeln!(stdout)?;
    eprintln!(
        "{} prompt tokens, {} tokens generated; time to first token {:.3} s, {:.2} tokens/s{}",
        g.prompt_tokens,
        g.tokens.len(),
        g.time_to_first_token_s,
        g.tokens_per_s,
        if g.stopped_at_eos {
            ""
        } else {
            " (token limit)"
        }
    );
    Ok(())
}

fn chat_loop(model: &mut Model, a: &GenerateArgs, sampling: Sampling) -> Result<()> {
    let template = model.chat.as_ref().with_context(|| {
        format!(
            "{}: the model has no chat template (tokenizer_config.json chat_template); use --prompt",
            model.path.display()
        )
    })?;
    let _ = template;
    let interactive = std::io::stdin().is_terminal();
    eprintln!(
        "chatting with {} ({}); an empty line or end of input ends the chat",
        model.path.display(),
        model.arch.name()
    );
    let mut messages: Vec<Message> = Vec::new();
    let mut first = a.prompt.clone();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        let line = match first.take() {
            Some(p) => p,
            None => {
                if interactive {
                    eprint!("> ");
                }
                match lines.next() {
                    Some(l) => l?,
                    None => break,
                }
            }
        };
        let line = line.trim().to_string();
        if line.is_empty() {
            break;
        }
        messages.push(Message::user(&line));
        let text = model
            .chat
            .as_ref()
            .expect("checked above")
            .render(&messages, true)?;
        let ids = model.encode(&text, false)?;
        model.causal()?.reset()?;
        let mut stdout = std::io::stdout().lock();
        let g = generate(model, &ids, 0, a.max_tokens, sampling, Some(&mut stdout))?;
        writeln!(stdout)?;
        eprintln!(
            "[{} tokens, first after {:.3} s, {:.2} tokens/s]",
            g.tokens.len(),
            g.time_to_first_token_s,
            g.tokens_per_s
        );
        messages.push(Message::assistant(g.text.trim()));
    }
    Ok(())
}

fn run_embed(a: EmbedArgs) -> Result<()> {
    qins_run::model::require_kind(&a.model, false, "embed")?;
    let model = open(&a.model, a.dtype.dtype())?;
    let e = model.encoder()?.embed(&model.tokenizer, &a.text)?;
    let mut stdout = std::io::stdout().lock();
    if a.json {
        let out = json!({
            "model": model.path,
            "architecture": model.arch.name(),
            "modules": model.encoder()?.module_names(),
            "load_s": model.load_time.as_secs_f64(),
            "embeddings": a.text.iter().zip(&e).map(|(t, v)| json!({"text": t, "embedding": v})).collect::<Vec<_>>(),
        });
        writeln!(stdout, "{}", serde_json::to_string(&out)?)?;
        return Ok(());
    }
    eprintln!(
        "loaded {} in {:.2} s; modules: {}",
        model.path.display(),
        model.load_time.as_secs_f64(),
        model.encoder()?.module_names().join(", ")
    );
    for (t, v) in a.text.iter().zip(&e) {
        let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:+.4}")).collect();
        writeln!(
            stdout,
            "{t:?}: [{} ...] ({} dims)",
            head.join(", "),
            v.len()
        )?;
    }
    Ok(())
}

fn run_compare(a: CompareArgs) -> Result<()> {
    let mut opts = CompareOptions {
        tokens: a.tokens,
        text_tokens: a.text_tokens,
        dtype: a.dtype.dtype(),
        near_tie: a.near_tie,
        ..CompareOptions::default()
    };
    if let Some(path) = &a.prompts {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        opts.prompts = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        anyhow::ensure!(
            !opts.prompts.is_empty(),
            "{}: no prompts (one per line)",
            path.display()
        );
    }
    let report = compare(&a.qins, &a.hf_dir, &opts)?;
    if let Some(path) = &a.json_out {
        write_json(path, &report)?;
    }
    let mut stdout = std::io::stdout().lock();
    if a.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    writeln!(
        stdout,
        "{} vs {} ({}, {}; loaded in {:.2} s / {:.2} s, compared in {:.1} s)",
        report.qins.display(),
        report.source.display(),
        report.architecture,
        report.dtype,
        report.load_s[1],
        report.load_s[0],
        report.compare_s
    )?;
    if let Some(c) = &report.causal {
        let t = &c.teacher_forced;
        writeln!(
            stdout,
            "teacher-forced, {} positions: KL(source‖qins) mean {:.6} max {:.6} p99 {:.6} nats; top-1 agreement {:.2}% ({} of {} disagreements at near-ties); perplexity {:.3} (source) vs {:.3} (qins)",
            t.positions, t.kl_mean, t.kl_max, t.kl_p99, 100.0 * t.top1_agreement,
            t.top1_disagreements_at_near_ties, t.top1_disagreements,
            t.perplexity_source, t.perplexity_qins
        )?;
        writeln!(
            stdout,
            "  the .qins moves the gap between the source's two best tokens by {:.3} logits on average, {:.3} at p99",
            t.top2_gap_change_mean, t.top2_gap_change_p99
        )?;
        writeln!(
            stdout,
            "greedy, {} prompts of up to {} tokens: {:.1}% identical tokens on average, {} prompts identical",
            c.greedy.len(),
            opts.tokens,
            100.0 * c.greedy_identical_mean,
            c.greedy_identical_prompts
        )?;
        for g in &c.greedy {
            let div = match &g.divergence {
                None => "identical".to_string(),
                Some(d) => format!(
                    "from token {}: {:?} vs {:?}, source margin {:.3} logits{}",
                    d.position,
                    d.source_token,
                    d.qins_token,
                    d.source_margin,
                    if d.near_tie { " (near-tie)" } else { "" }
                ),
            };
            writeln!(
                stdout,
                "  {:5.1}% {:?}: {div}",
                100.0 * g.identical_share,
                g.prompt
            )?;
        }
        writeln!(
            stdout,
            "{} of {} divergences at near-ties (source margin < {} logits: the source itself barely chose; free-running agreement then measures luck as much as fidelity)",
            c.greedy_divergences_at_near_ties, c.greedy_divergences, c.near_tie
        )?;
    }
    if let Some(e) = &report.encoder {
        writeln!(
            stdout,
            "{} sentences, {} dims ({}): cosine mean {:.6} min {:.6}; max |diff| {:.2e}; nearest-neighbour agreement {:.1}% (in-topic {:.1}% source, {:.1}% qins)",
            e.sentences,
            e.dimensions,
            e.modules.join(", "),
            e.cosine_mean,
            e.cosine_min,
            e.max_abs_diff,
            100.0 * e.nearest_neighbour_agreement,
            100.0 * e.nearest_in_topic[0],
            100.0 * e.nearest_in_topic[1]
        )?;
    }
    Ok(())
}
