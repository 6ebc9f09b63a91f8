"""Rerank: ``custom/bge_rerank`` workers and ``emb_rerank`` as the original had it.

No reranker ships in a package, so the tests build one: a tiny
BertForSequenceClassification with one label (bge-reranker's head) and a
WordPiece tokenizer made from a few sentences, random weights, saved into
the test's temporary folder. Its scores mean nothing; the tests check what
rerank does with them (one per pair, in order, ranked, batched, the same
computation as the model by hand), never which numbers came out.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import byzerllm
from byzerllm.broker.errors import (
    BackendError,
    BackendLoadError,
    BackendNotFoundError,
    ConfigurationError,
    InvalidInferParamsError,
)
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.registry import backend_class
from byzerllm.workers.runtime import Worker
from tests.conftest import FAST

pytest.importorskip("torch", reason="torch is not installed (byzerllm[transformers])")
pytest.importorskip("transformers", reason="transformers is not installed (byzerllm[transformers])")

from byzerllm.workers.backends.transformers.rerank import (
    TransformersRerankBackend,
)

pytestmark = pytest.mark.timeout(180)

QUERY = "what is a panda"
DOCS = [
    "hi",
    "the giant panda is a bear species endemic to china",
    "stock markets fell today",
    "pandas eat bamboo in the mountains",
]
_SENTENCES = [QUERY, *DOCS, "how do cats sleep", "cats sleep most of the day"]
# one CPU thread: the machine's cores are shared with other test processes
THREADS = {"threads": 1}
CLOSE = 1e-4  # padding in a shared batch moves a float32 score by rounding only


def _build_reranker(out: Path, num_labels: int = 1) -> Path:
    """A tiny BERT cross-encoder folder, as ``save_pretrained`` writes a real one."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out.mkdir(parents=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'")
    words = sorted({w for s in _SENTENCES for w in s.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    vocab += [w for w in words if w not in vocab]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", "utf-8")
    # from the folder: what the constructor takes differs between transformers 4 and 5
    tokenizer = BertTokenizerFast.from_pretrained(out, model_max_length=64)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
        initializer_range=0.5,  # scores far apart, not all near 0 as at BERT's 0.02
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertForSequenceClassification(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_reranker(tmp_path_factory.mktemp("rerank") / "tiny-bge-reranker")


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_restored() -> Any:
    """``threads`` is process-wide in torch; later test modules get the default back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _require_registered() -> None:
    """Skip where the installed entry points are older than custom/bge_rerank."""
    try:
        backend_class("custom/bge_rerank")
    except BackendNotFoundError:
        pytest.skip("the installed entry points predate custom/bge_rerank: pip install -e .")


def _spec(alias: str, model_path: Path, concurrency: int = 4, **params: Any) -> DeploySpec:
    return DeploySpec(
        alias=alias,
        pretrained_model_type="custom/bge_rerank",
        model_path=str(model_path),
        worker_concurrency=concurrency,
        infer_params={**THREADS, **params},
    )


@pytest.fixture
async def serve(settings: BrokerSettings) -> AsyncIterator[Callable[..., Any]]:
    """``await serve(alias, model_path, concurrency=4, **infer_params)``: an in-loop
    worker whose backend is found through the registry, as ``byzerllm deploy`` finds it."""
    _require_registered()
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(alias: str, model_path: Path, concurrency: int = 4, **params: Any) -> Worker:
        worker = Worker(_spec(alias, model_path, concurrency, **params), settings, timing=FAST)
        task = asyncio.create_task(worker.run())
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED, timeout=120)
        if task.done():
            ready.cancel()
            task.result()  # raises the start error
        assert worker.ready.is_set(), f"{alias} did not start in time"
        running.append((worker, task))
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    if running:
        await asyncio.wait([t for _, t in running], timeout=30)


def _by_hand(folder: Path, pairs: list[list[str]]) -> list[float]:
    """The cross-encoder's logits for ``pairs``, one pair at a time, straight from transformers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    scores = []
    with torch.inference_mode():
        for query, doc in pairs:
            batch = tokenizer([query], [doc], return_tensors="pt")
            scores.append(float(model(**batch).logits.view(-1)[0]))
    return scores


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < CLOSE for x, y in zip(a, b, strict=True))


async def test_one_score_per_pair_ranked_best_first_as_in_the_original(serve, llm, reranker_dir):
    await serve("rerank", reranker_dir)
    pairs = [[QUERY, doc] for doc in DOCS]
    [r] = await llm.emb_rerank("rerank", sentence_pairs=pairs)
    scores = r.metadata["scores"]
    assert len(scores) == len(pairs) and all(isinstance(s, float) for s in scores)
    assert len(set(scores)) == len(scores), "a random model still tells its inputs apart"
    # the model's own logits, pair by pair: the scores are in the pairs' order
    expected = _by_hand(reranker_dir, pairs)
    assert _close(scores, expected), (scores, expected)
    # the original's output: (pair, score), best first, each pair the caller's own
    assert [s for _, s in r.output] == sorted(scores, reverse=True)
    assert all(pair is pairs[scores.index(score)] for pair, score in r.output)
    assert r.input is pairs
    assert r.metadata["request_id"]


async def test_a_single_pair_answers_one_tuple_and_the_same_pair_scores_the_same(
    serve, llm, reranker_dir
):
    await serve("rerank", reranker_dir)
    assert llm.setup_default_re_rank_model_name("rerank") is llm
    pair = [QUERY, DOCS[1]]
    [one] = await llm.emb_rerank(sentence_pairs=pair)  # the default rerank model
    got_pair, score = one.output
    assert got_pair is pair and isinstance(score, float)
    # the same pair twice in a request, and among other pairs, scores the same
    [many] = await llm.emb_rerank(sentence_pairs=[pair, [QUERY, DOCS[0]], list(pair)])
    first, _, third = many.metadata["scores"]
    assert _close([first, third], [score, score])
    [again] = await llm.emb_rerank(sentence_pairs=tuple(pair))
    assert abs(again.output[1] - score) < CLOSE


async def test_pairs_of_several_queries_go_as_one_request_per_query(serve, llm, reranker_dir):
    await serve("rerank", reranker_dir)
    pairs = [
        [QUERY, DOCS[1]],
        ["how do cats sleep", "cats sleep most of the day"],
        [QUERY, DOCS[2]],
    ]
    [r] = await llm.emb_rerank("rerank", sentence_pairs=pairs)
    assert _close(r.metadata["scores"], _by_hand(reranker_dir, pairs))
    assert len(set(r.metadata["request_ids"])) == 2


async def test_normalize_gives_the_sigmoid_of_the_score(serve, llm, reranker_dir):
    await serve("raw", reranker_dir)
    await serve("sigmoid", reranker_dir, normalize=True)
    pairs = [[QUERY, doc] for doc in DOCS]
    [raw] = await llm.emb_rerank("raw", sentence_pairs=pairs)
    [squashed] = await llm.emb_rerank("sigmoid", sentence_pairs=pairs)
    expected = [1 / (1 + math.exp(-s)) for s in raw.metadata["scores"]]
    assert _close(squashed.metadata["scores"], expected)
    assert all(0 < s < 1 for s in squashed.metadata["scores"])
    meta = await llm.get_meta("sigmoid")
    assert meta["rerank_mode"] is True and meta["normalize"] is True
    assert meta["max_length"] == 64  # the tokenizer's limit, under the default 512
    assert meta["embedding_mode"] is False


async def test_concurrent_requests_share_a_forward_pass_and_keep_their_scores(
    serve, llm, reranker_dir
):
    # a long wait for the rest of a burst: what the test needs is the burst in one pass
    worker = await serve("rerank", reranker_dir, concurrency=16, batch_wait_ms=200)
    pairs = [[QUERY, doc] for doc in DOCS] + [["how do cats sleep", doc] for doc in DOCS]
    pairs = pairs * 2
    alone = _by_hand(reranker_dir, pairs)
    batcher = worker.backend.batcher
    passes_before = batcher.batches
    together = await asyncio.gather(*(llm.emb_rerank("rerank", sentence_pairs=p) for p in pairs))
    for solo, [r], pair in zip(alone, together, pairs, strict=True):
        assert r.output[0] is pair
        assert abs(r.output[1] - solo) < CLOSE
    assert batcher.largest_batch > 1
    assert batcher.batches - passes_before < len(pairs), "every request ran its own pass"


async def test_pairs_longer_than_max_length_lose_their_tail(serve, llm, reranker_dir):
    await serve("short", reranker_dir, max_length=16)
    long_doc = " ".join(DOCS * 3)
    pairs = [[QUERY, long_doc], [QUERY, long_doc + " cats sleep most of the day"]]
    [r] = await llm.emb_rerank("short", sentence_pairs=pairs)
    cut, cut_too = r.metadata["scores"]
    assert abs(cut - cut_too) < CLOSE  # what differs comes after the 16th token
    assert (await llm.get_meta("short"))["max_length"] == 16


async def test_a_model_without_rerank_says_so(start_worker, llm):
    await start_worker("echo")
    with pytest.raises(BackendError, match=r"custom/echo \(echo\) does not support rerank"):
        await llm.emb_rerank("echo", sentence_pairs=["q", "d"])


async def test_bad_sentence_pairs_and_no_model_are_refused_before_sending(llm):
    for bad in ([], None, "just a string", [["q"]], [["q", 1]], [("q", "d"), "x"]):
        with pytest.raises(ConfigurationError, match="sentence_pairs"):
            await llm.emb_rerank("rerank", sentence_pairs=bad)
    with pytest.raises(ConfigurationError, match="setup_default_re_rank_model_name"):
        await llm.emb_rerank(sentence_pairs=["q", "d"])


def test_an_unknown_infer_params_key_is_refused(reranker_dir):
    with pytest.raises(InvalidInferParamsError, match="did you mean max_length"):
        TransformersRerankBackend(_spec("rerank", reranker_dir, max_lenght=32))


async def test_a_max_length_beyond_the_model_and_a_classifier_fail_the_start(
    serve, reranker_dir, tmp_path
):
    with pytest.raises(BackendLoadError, match="max_length=100 is more than the 64 tokens"):
        await serve("too_long", reranker_dir, max_length=100)
    three_labels = _build_reranker(tmp_path / "classifier", num_labels=3)
    with pytest.raises(BackendLoadError, match="3 labels"):
        await serve("classifier", three_labels)


async def test_the_sync_facade(serve, settings, reranker_dir):
    await serve("rerank", reranker_dir)

    def use() -> tuple[Any, Any]:
        sync = byzerllm.ByzerLLM(redis_url=settings.redis_url, prefix=settings.prefix)
        try:
            assert sync.setup_default_re_rank_model_name("rerank") is sync
            assert sync.default_rerank_model_name == "rerank"
            [one] = sync.emb_rerank(sentence_pairs=[QUERY, DOCS[1]])
            [many] = sync.emb_rerank(sentence_pairs=[[QUERY, d] for d in DOCS])
            return one, many
        finally:
            sync.close()

    # the worker runs in this loop: the blocking calls go to a thread
    one, many = await asyncio.to_thread(use)
    assert one.output[0] == [QUERY, DOCS[1]]
    assert [s for _, s in many.output] == sorted(many.metadata["scores"], reverse=True)
    assert abs(many.metadata["scores"][1] - one.output[1]) < CLOSE


def test_simple_byzerllm_reranks_in_process(reranker_dir):
    _require_registered()
    llm = byzerllm.SimpleByzerLLM(default_model_name=None)
    try:
        llm.deploy(
            model_path=str(reranker_dir),
            pretrained_model_type="custom/bge_rerank",
            udf_name="rerank",
            infer_params=THREADS,
        )
        pairs = [[QUERY, doc] for doc in DOCS]
        [r] = llm.setup_default_re_rank_model_name("rerank").emb_rerank(sentence_pairs=pairs)
        assert _close(r.metadata["scores"], _by_hand(reranker_dir, pairs))
        assert [s for _, s in r.output] == sorted(r.metadata["scores"], reverse=True)
    finally:
        llm.undeploy("rerank")
