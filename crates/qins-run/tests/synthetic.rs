//! Every architecture on qins-synth checkpoints (random weights, tiny sizes): loaded from the
//! `.qins` and from the directory, generating, and compared (identical when every tensor is
//! raw, close with the default codec).

use std::path::{Path, PathBuf};

use candle_core::DType;
use qins_convert::{convert, ConvertOptions, NoProgress};
use qins_run::{compare, generate, Arch, CompareOptions, Model, Sampling};
use qins_synth::{generate as synth, SynthArch, SynthConfig, SynthDtype};

struct Case {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    encoded: PathBuf,
    raw: PathBuf,
}

fn case(arch: SynthArch) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    synth(&SynthConfig::tiny_arch(arch, SynthDtype::F32), &dir).unwrap();
    let encoded = tmp.path().join("model.qins");
    let raw = tmp.path().join("raw.qins");
    convert(
        &ConvertOptions::new(dir.clone(), encoded.clone()),
        &NoProgress,
    )
    .unwrap();
    let mut o = ConvertOptions::new(dir.clone(), raw.clone());
    o.policy.exclude = vec!["*".into()];
    convert(&o, &NoProgress).unwrap();
    Case {
        _tmp: tmp,
        dir,
        encoded,
        raw,
    }
}

fn small_compare() -> CompareOptions {
    CompareOptions {
        prompts: vec!["the cat and the dog".into(), "Hello there!".into()],
        tokens: 6,
        text_tokens: Some(40),
        ..CompareOptions::default()
    }
}

const CAUSAL: [(SynthArch, Arch); 6] = [
    (SynthArch::Llama, Arch::Llama),
    (SynthArch::Mistral, Arch::Mistral),
    (SynthArch::Qwen2, Arch::Qwen2),
    (SynthArch::Qwen3, Arch::Qwen3),
    (SynthArch::Gemma3, Arch::Gemma3),
    (SynthArch::Phi3, Arch::Phi3),
];

fn greedy(path: &Path, prompt: &str) -> Vec<u32> {
    let mut m = Model::open(path, DType::F32).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ids = m.prompt_tokens(prompt, true).unwrap();
    generate(&mut m, &ids, 0, 5, Sampling::GREEDY, None)
        .unwrap()
        .tokens
}

#[test]
fn every_causal_architecture_generates_from_the_qins_and_the_directory() {
    for (sa, arch) in CAUSAL {
        let c = case(sa);
        let m = Model::open(&c.encoded, DType::F32).unwrap();
        assert_eq!(m.arch, arch);
        assert!(m.is_qins);
        // The synthetic llama keeps the files it always had; the others carry a template.
        assert_eq!(m.chat.is_some(), sa != SynthArch::Llama, "{sa}");
        // Random weights: the tokens are noise, but there are five of them (no EOS is likely
        // among 211) and the raw .qins gives exactly the directory's.
        let from_dir = greedy(&c.dir, "the cat");
        let from_raw = greedy(&c.raw, "the cat");
        assert_eq!(from_dir, from_raw, "{sa}");
        let from_qins = greedy(&c.encoded, "the cat");
        assert!(!from_qins.is_empty(), "{sa}");
    }
}

#[test]
fn compare_is_exact_for_raw_tensors_and_close_for_the_default_codec() {
    for (sa, _) in CAUSAL {
        let c = case(sa);
        let r = compare(&c.raw, &c.dir, &small_compare()).unwrap_or_else(|e| panic!("{sa}: {e}"));
        let causal = r.causal.unwrap();
        let t = &causal.teacher_forced;
        assert!(t.positions >= 20, "{sa}: {}", t.positions);
        assert_eq!(t.kl_max, 0.0, "{sa}: raw tensors give the same logits");
        assert_eq!(t.top1_agreement, 1.0, "{sa}");
        assert_eq!(t.perplexity_source, t.perplexity_qins, "{sa}");
        assert_eq!(causal.greedy_identical_prompts, 2, "{sa}");

        let r =
            compare(&c.encoded, &c.dir, &small_compare()).unwrap_or_else(|e| panic!("{sa}: {e}"));
        let t = r.causal.unwrap().teacher_forced;
        // Measured on these checkpoints: mean KL 1e-6..1e-4 nats (random weights give nearly
        // flat distributions); a broken decode gives far more.
        assert!(
            t.kl_mean > 0.0 && t.kl_mean < 1e-3,
            "{sa}: mean KL {}",
            t.kl_mean
        );
        assert!(t.top1_agreement > 0.8, "{sa}: top-1 {}", t.top1_agreement);
    }
}

#[test]
fn bf16_runs_load_and_compare_the_same_way() {
    let c = case(SynthArch::Qwen3);
    let opts = CompareOptions {
        dtype: DType::BF16,
        ..small_compare()
    };
    let r = compare(&c.raw, &c.dir, &opts).unwrap();
    assert_eq!(r.dtype, "bf16");
    assert_eq!(r.causal.unwrap().teacher_forced.kl_max, 0.0);
}

#[test]
fn the_synthetic_bert_embeds_with_its_dense_module_from_the_qins_and_the_directory() {
    let c = case(SynthArch::Bert);
    let texts = vec!["the cat sat".to_string(), "and then the dog".to_string()];
    let m = Model::open(&c.dir, DType::F32).unwrap();
    assert_eq!(m.arch, Arch::Bert);
    let names = m.encoder().unwrap().module_names();
    assert_eq!(names, ["Pooling(mean)", "Dense(64x24)", "Normalize"]);
    let from_dir = m.encoder().unwrap().embed(&m.tokenizer, &texts).unwrap();
    assert_eq!(from_dir[0].len(), qins_synth::BERT_DENSE_OUT);
    let norm: f32 = from_dir[0].iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-5);
    let raw = Model::open(&c.raw, DType::F32).unwrap();
    assert_eq!(
        raw.encoder()
            .unwrap()
            .embed(&raw.tokenizer, &texts)
            .unwrap(),
        from_dir
    );
    let r = compare(&c.encoded, &c.dir, &CompareOptions::default()).unwrap();
    let e = r.encoder.unwrap();
    assert_eq!(e.sentences, 32);
    assert!(e.cosine_min > 0.99, "{}", e.cosine_min);
}

#[test]
fn a_tied_head_that_is_not_stored_is_served_from_the_embeddings() {
    // Mistral's model always asks for lm_head.weight; this checkpoint ties it and stores none.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    let mut cfg = SynthConfig::tiny_arch(SynthArch::Mistral, SynthDtype::F32);
    cfg.tie_word_embeddings = true;
    synth(&cfg, &dir).unwrap();
    let qins = tmp.path().join("tied.qins");
    convert(&ConvertOptions::new(dir.clone(), qins.clone()), &NoProgress).unwrap();
    for path in [&dir, &qins] {
        let m = Model::open(path, DType::F32).unwrap();
        assert_eq!(m.stats.aliased, ["lm_head.weight"], "{}", path.display());
    }
    assert_eq!(greedy(&dir, "the cat").len(), 5);
    assert_eq!(greedy(&qins, "the cat").len(), 5);
}
