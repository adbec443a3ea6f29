//! Chat templates: the model's own Jinja template (from `tokenizer_config.json`'s
//! `chat_template`, or a `chat_template.jinja` file), rendered with minijinja as Hugging Face's
//! `apply_chat_template` renders it with Jinja2.

use minijinja::{context, Environment, Error, ErrorKind, Value as JValue};
use serde::Serialize;
use serde_json::Value;

use crate::model::token_text;
use crate::RunError;
use qins_candle::TensorSource;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A user message.
    pub fn user(content: &str) -> Message {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: &str) -> Message {
        Message {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// A model's chat template, compiled.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` with the model's `bos_token` and `eos_token`.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, Error> {
        let mut env = Environment::new();
        // Jinja2 as transformers configures it: trim_blocks and lstrip_blocks.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        // Python's string and dict methods (`.strip()`, `.startswith()`, `.items()`...).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<JValue, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |_fmt: String| -> String {
            // Templates that print today's date: a fixed date keeps outputs reproducible.
            "26 Jul 2024".to_string()
        });
        env.add_template_owned("chat", source.to_string())?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The template of a model's files: `chat_template.jinja`, else `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list of named templates of which `default` is used).
    pub fn from_assets(
        source: &dyn TensorSource,
        tok_config: &Value,
    ) -> Result<Option<ChatTemplate>, RunError> {
        let file_template = source
            .asset("chat_template.jinja")?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let text = file_template.or_else(|| match tok_config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        });
        let Some(text) = text else { return Ok(None) };
        let bos = token_text(tok_config.get("bos_token")).unwrap_or_default();
        let eos = token_text(tok_config.get("eos_token")).unwrap_or_default();
        ChatTemplate::new(&text, &bos, &eos)
            .map(Some)
            .map_err(|e| RunError::BadAsset {
                file: source.path().into(),
                asset: "tokenizer_config.json".into(),
                cause: format!("chat_template: {e:#}"),
            })
    }

    /// Renders `messages`, followed by the assistant's turn opening if `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, RunError> {
        let tmpl = self.env.get_template("chat").map_err(|e| RunError::Text {
            what: "the chat template",
            cause: e.to_string(),
        })?;
        tmpl.render(context! {
            messages => messages
                .iter()
                .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
                .collect::<JValue>(),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(|e| RunError::Text {
            what: "the chat template",
            cause: format!("{e:#}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's template (ChatML with a default system prompt).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_as_transformers_does() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").unwrap();
        let text = t
            .render(
                &[
                    Message::user("Hi"),
                    Message::assistant("Hello"),
                    Message::user("Bye"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n\
             <|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_loop_controls_python_methods_and_tojson() {
        // Gemma-style alternation check, Qwen-style string methods, a namespace and tojson.
        let src = "{{ bos_token }}{% set ns = namespace(n=0) %}{% for m in messages %}\
            {% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}\
            {% if m.content.startswith('skip') %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}\
            [{{ m.role }}:{{ m.content.strip() | trim }}:{{ m.content | tojson }}]{% endfor %}{{ ns.n }}";
        let t = ChatTemplate::new(src, "<bos>", "<eos>").unwrap();
        let out = t
            .render(
                &[
                    Message::user(" a "),
                    Message::assistant("skip me"),
                    Message::user("b"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(out, "<bos>[user:a:\" a \"][user:b:\"b\"]2");
        let err = t
            .render(&[Message::user("a"), Message::user("b")], false)
            .unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
    }
}
