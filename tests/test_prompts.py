"""Prompts are the method: they must match the original code to the character."""

from racro_trl.reasoning import prompts as P


def test_caption_prompt_places_image_where_the_tag_was():
    messages = P.caption_messages("<image>What colour is the square?")
    assert messages[0] == {
        "role": "system",
        "content": [
            {
                "type": "text",
                "text": "You are given an image and a relevant question. Based on the query, please describe the image "
                "in detail. Do not try to answer the question.",
            }
        ],
    }
    assert messages[1]["content"] == [
        {"type": "text", "text": "Question: "},
        {"type": "image"},
        {
            "type": "text",
            "text": "What colour is the square?\nPlease describe the image. DO NOT try to answer the question!",
        },
    ]


def test_caption_prompt_without_tag_gets_the_image_prefixed():
    content = P.caption_messages("How many dots?", num_images=1)[1]["content"]
    assert [c["type"] for c in content] == ["text", "image", "text"]
    assert content[0]["text"] == "Question: "


def test_multi_image_tags_and_mismatch():
    content = P.caption_messages("Compare <image> and <image>.", num_images=2)[1]["content"]
    assert [c["type"] for c in content] == ["text", "image", "text", "image", "text"]
    # one tag for two images: both go up front (the original rule)
    content = P.caption_messages("Compare <image> with the other.", num_images=2)[1]["content"]
    assert [c["type"] for c in content] == ["text", "image", "image", "text"]
    assert "<image>" not in "".join(c.get("text", "") for c in content)


def test_reasoner_reward_prompt_verbatim():
    chat = P.reasoner_reward_messages("Two red circles.", "<image>How many circles? " + P.SHORT_ANSWER_HINT)
    assert chat == [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": "### The detailed caption of the provided image: Two red circles.\n\n"
            "### Question: How many circles? Please think step by step. The final answer MUST BE put in \\boxed{}.",
        },
    ]


def test_qa_cot_and_joint_prompts():
    qa = P.qa_cot_messages("What is x?")
    assert qa[1]["content"][-1]["text"].endswith(
        "What is x? Please think step by step. The final answer MUST BE put in \\boxed{}."
    )
    joint = P.joint_messages("cap", "<image>What is x?", "x is 3")
    text = joint[1]["content"]
    assert "### The detailed caption of the provided image: cap\n" in text
    assert "### A problem to be solved: What is x?\n" in text
    assert "### A tentative model response: x is 3\n" in text
    assert text.endswith(
        "please output the tentative response.\n\n### Please think step by step. The final answer MUST BE put in \\boxed{}."
    )
