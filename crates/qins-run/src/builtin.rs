//! The texts `compare` runs on by default, written for this project.

/// Plain English for the teacher-forced comparison and perplexity (a few hundred tokens).
pub const TEXT: &str = "\
The town library opens at nine in the morning, but the first visitors arrive long before that. \
Some come to read the newspapers, which are delivered in a bundle tied with string and left \
beside the back door. Others come for the warm room and the quiet, and a few come because the \
librarian, a patient woman who has worked there for thirty years, always has time to talk.

On most days the work is simple. Books are returned, checked for damage and put back on the \
shelves in the right order. Children sit on the carpet in the corner and listen to stories \
about animals, the sea and faraway cities. Students fill the long tables in the afternoon, \
writing notes and whispering about their exams. In the evening the lights are turned off one \
row at a time, and the building becomes still again.

Last winter the heating failed during a week of heavy snow. The library stayed open anyway. \
Volunteers brought blankets and flasks of tea, and someone found an old radio that played music \
from a station in the next valley. People who had never spoken to each other shared tables and \
helped each other with crosswords. When the engineer finally came to repair the boiler, he said \
that he had never seen so many people happy to be cold.

Libraries are often described as places for books, but that is only part of the truth. They are \
places where a town keeps its memory, where questions can be asked without embarrassment, and \
where anyone may sit for an hour without having to buy anything. That is why, when the council \
discussed closing the building to save money, so many people came to the meeting that the doors \
had to be left open and the speeches were heard in the street.
";

/// Prompts for the free-running greedy comparison (chat-templated when the model has a
/// template).
pub const PROMPTS: [&str; 8] = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three fruits that are rich in vitamin C.",
    "How do I boil an egg?",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7?",
    "Give me a tip for learning a new language.",
];

/// Sentences for the encoder comparison: eight topics, four sentences each, so that a
/// sentence's nearest neighbour is usually one of its own group.
pub const SENTENCES: [&str; 32] = [
    // Cooking
    "Simmer the tomato sauce slowly for an hour.",
    "She kneaded the bread dough on a floured table.",
    "Add a pinch of salt to the boiling pasta water.",
    "The soup tastes better with fresh basil.",
    // Weather
    "Heavy rain is expected across the north tonight.",
    "The afternoon will be sunny with a light breeze.",
    "A cold front will bring snow to the mountains.",
    "Fog made the morning drive slow and dangerous.",
    // Sport
    "The striker scored twice in the second half.",
    "Our team lost the final on penalties.",
    "He ran the marathon in under three hours.",
    "The tennis match went to a fifth set.",
    // Computers
    "The laptop will not boot after the update.",
    "Restart the router if the connection drops.",
    "This program crashes when the disk is full.",
    "The new processor has eight cores.",
    // Animals
    "The cat slept all afternoon in the sun.",
    "Wolves hunt together in packs.",
    "My dog barks whenever the postman comes.",
    "The owl catches mice at night.",
    // Travel
    "Our flight to Lisbon was delayed by two hours.",
    "We took the night train across the border.",
    "The hotel room had a view of the harbour.",
    "Pack a passport and a charger for the trip.",
    // Money
    "Interest rates rose again this quarter.",
    "She saves a tenth of her salary every month.",
    "The company reported record profits.",
    "Inflation has made groceries more expensive.",
    // Health
    "Drink plenty of water when you have a fever.",
    "Regular exercise lowers blood pressure.",
    "The doctor prescribed antibiotics for the infection.",
    "Getting enough sleep helps the body recover.",
];

/// The topical group of each of [`SENTENCES`].
pub fn sentence_group(i: usize) -> usize {
    i / 4
}
