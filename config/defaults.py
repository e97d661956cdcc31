"""Default configuration (yacs), following TransReID/TSD key names and defaults.

Every key below is read somewhere in the code base. Keys that the reference implementation carries but
ignores were either made to work (``MODEL.ID_LOSS_WEIGHT``, ``MODEL.TRIPLET_LOSS_WEIGHT``,
``MODEL.IF_LABELSMOOTH``, ``MODEL.ARCH``, ``TEST.RE_RANKING``, ``TEST.FEAT_NORM``, ``SOLVER.WARMUP_FACTOR``)
or left out (ResNet, JPM, centre loss, DHW, multistep scheduler, neck choices). Keys marked
"(new)" do not exist in the reference; their defaults reproduce the reference's hard-coded behaviour.
"""
from yacs.config import CfgNode as CN

_C = CN()

# -----------------------------------------------------------------------------------------------
# MODEL
# -----------------------------------------------------------------------------------------------
_C.MODEL = CN()
# 'cuda' or 'cpu'. train.py / test.py refuse 'cuda' when no GPU is visible (a GPU run silently on the
# CPU would take days); the tools fall back to the CPU with a warning.
_C.MODEL.DEVICE = "cuda"
# GPUs to use, exported as CUDA_VISIBLE_DEVICES before CUDA is initialised (single-process runs only;
# under torchrun set CUDA_VISIBLE_DEVICES yourself). Written as 1, 0,1 or '0' (YAML or command line).
_C.MODEL.DEVICE_ID = "0"
# (new) CUDA: float32 matrix products on TF32 tensor cores (torch.backends.cuda.matmul.allow_tf32), in
# training and evaluation: much faster float32 on Ampere and later GPUs, ~1e-3 relative rounding per
# product, so off by default (torch's default: full float32 matmuls; cuDNN convolutions, i.e. the patch
# embedding, use TF32 either way). Acts on float32 only: under SOLVER.AMP / TEST.AMP autocast the
# products run in float16 / bfloat16 anyway. No effect on a CPU.
_C.MODEL.TF32 = False
# Prefix of the periodic checkpoints: OUTPUT_DIR/{NAME}_{epoch}.pth
_C.MODEL.NAME = "transformer"
# 'imagenet': load MODEL.PRETRAIN_PATH into the ViT backbone; 'self': load a full TSD checkpoint
# (fine-tuning); 'none': random initialisation.
_C.MODEL.PRETRAIN_CHOICE = "imagenet"
_C.MODEL.PRETRAIN_PATH = ""
# 'tsd': the full TSD model; 'vit': the ViT baseline (global branch only) for ablations.
_C.MODEL.ARCH = "tsd"
# ViT backbone name, see model/backbones/vit_pytorch.py (registered TransReID factories).
_C.MODEL.TRANSFORMER_TYPE = "vit_base_patch16_224_TransReID"
_C.MODEL.STRIDE_SIZE = [16, 16]
_C.MODEL.DROP_PATH = 0.1
_C.MODEL.DROP_OUT = 0.0
_C.MODEL.ATT_DROP_RATE = 0.0
# Side information embedding (camera / view), scaled by SIE_COE.
_C.MODEL.SIE_CAMERA = False
_C.MODEL.SIE_VIEW = False
_C.MODEL.SIE_COE = 3.0
# Number of body parts P: the number of groups of INPUT.MASK_PREPROCESS (8 eight, 5 five, 3 three,
# 1 one). Give either key alone and the other follows (the later config layer decides: the command line
# over the file over its _BASE_); both given must agree.
_C.MODEL.NUM_PARTS = 5
# Foreground-pooled head (ID loss only).
_C.MODEL.WITH_FORE_HEAD = False
# Diversity loss on teacher and mask-pooled part features.
_C.MODEL.WITH_DIVERSE_LOSS = False
# (new) Part decoder attention heads and FFN width ratio (reference: 8 heads, FFN 4 x embed_dim).
_C.MODEL.DECODER_HEADS = 8
_C.MODEL.DECODER_FFN_RATIO = 4.0
# Identity classifier type; the reference's TSD path uses plain bias-free linear classifiers.
_C.MODEL.ID_LOSS_TYPE = "softmax"
# Soft-margin batch-hard triplet on the global feature when True, else margin SOLVER.MARGIN.
_C.MODEL.NO_MARGIN = False
# 'on': label-smoothed (0.1) ID cross-entropy; 'off': plain CE (the reference always uses plain CE,
# and its TSD configs set 'off').
_C.MODEL.IF_LABELSMOOTH = "on"
# Loss weights (the reference has all of them at 1, only MASK_LOSS_WEIGHT is a knob there).
_C.MODEL.ID_LOSS_WEIGHT = 1.0
_C.MODEL.TRIPLET_LOSS_WEIGHT = 1.0
_C.MODEL.MASK_LOSS_WEIGHT = 1.0
_C.MODEL.VISIBILITY_LOSS_WEIGHT = 1.0  # (new)
_C.MODEL.DISTILL_LOSS_WEIGHT = 1.0  # (new)
_C.MODEL.DIVERSE_LOSS_WEIGHT = 1.0  # (new)
# (new) The original code's 'eight' diversity weighting averages per row of a reshaped view, not over
# all allowed part pairs (reproduced by default).
# True: the exact weighted mean over all allowed part pairs instead.
_C.MODEL.DIVERSE_EXACT_MEAN = False

# -----------------------------------------------------------------------------------------------
# INPUT
# -----------------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.SIZE_TRAIN = [384, 128]
_C.INPUT.SIZE_TEST = [384, 128]
_C.INPUT.PROB = 0.5  # horizontal flip
_C.INPUT.RE_PROB = 0.5  # paired random erasing
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.PADDING = 10
# Part grouping of the 36 PifPaf channels: 'eight', 'five', 'three', 'one' (sets MODEL.NUM_PARTS).
_C.INPUT.MASK_PREPROCESS = "five"
# (new) Background = max part confidence below this; then softmax(weight x masks) over channels.
_C.INPUT.MASK_BG_THRESHOLD = 0.3
_C.INPUT.MASK_SOFTMAX_WEIGHT = 15.0
# (new) The original code flips masks without swapping left/right channels (label noise for 'eight':
# a flipped left arm stays labelled left). True swaps the left/right part groups on flip.
_C.INPUT.FLIP_SWAP_LR = False
# (new) Augment whole batches on the training device after the transfer (flip, pad-crop, normalise,
# erasing, mask background + softmax; datasets/batch_transforms.py) instead of per sample in the loader
# workers, which then only decode (or read the cache) and draw each sample's parameters from its seed.
# Same batches as the per-sample path (bitwise on the CPU), a fraction of the loader's CPU time.
_C.INPUT.BATCH_AUGMENT = False

# -----------------------------------------------------------------------------------------------
# DATASETS
# -----------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# 'occ_duke', 'new_occ_duke', 'dukemtmc', 'market1501', 'msmt17', 'occ_reid'
_C.DATASETS.NAMES = "market1501"
_C.DATASETS.ROOT_DIR = "../data"
# (new) A JPEG cut mid-stream (no end-of-image marker; decoded, its missing part is grey): 'error' names
# the file and stops (training checks every training image before the first step, ~1 s for 15k files;
# evaluation when it reads the file); 'warn' uses it as decoded and logs a warning naming it; 'ignore'
# uses it silently, the reference's behaviour (PIL's LOAD_TRUNCATED_IMAGES = True, OpenCV's decoder).
_C.DATASETS.TRUNCATED_IMAGES = "error"

# -----------------------------------------------------------------------------------------------
# DATALOADER
# -----------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 8
# 'softmax': plain shuffling; 'softmax_triplet' / 'img_triplet': P x K identity sampler.
_C.DATALOADER.SAMPLER = "softmax"
_C.DATALOADER.NUM_INSTANCE = 16
# (new) Decode the training split once into an on-disk cache (images resized to INPUT.SIZE_TRAIN as
# uint8, masks grouped per INPUT.MASK_PREPROCESS at their own resolution), memory-mapped by the workers;
# built on first use (local rank 0 of each node, NUM_WORKERS processes), rebuilt when a source file
# (path, size, mtime) or one of those keys changes (datasets/cache.py). Values equal the decoded ones.
_C.DATALOADER.CACHE = False
# (new) Where caches live (one folder per data set and fingerprint; delete freely). '': next to the
# runs, <parent of OUTPUT_DIR>/data_cache, or ~/.cache/tsd without an OUTPUT_DIR.
_C.DATALOADER.CACHE_DIR = ""

# -----------------------------------------------------------------------------------------------
# SOLVER
# -----------------------------------------------------------------------------------------------
_C.SOLVER = CN()
# 'SGD', 'Adam', 'AdamW' (any torch.optim class name works).
_C.SOLVER.OPTIMIZER_NAME = "Adam"
_C.SOLVER.MAX_EPOCHS = 100
_C.SOLVER.BASE_LR = 3e-4
_C.SOLVER.LARGE_FC_LR = False
_C.SOLVER.BIAS_LR_FACTOR = 1
_C.SOLVER.SEED = 1234
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.MARGIN = 0.3
_C.SOLVER.WEIGHT_DECAY = 0.0005
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0005
# Cosine schedule with linear warmup from WARMUP_FACTOR x BASE_LR to the group lr over WARMUP_EPOCHS,
# down to MIN_LR_FACTOR x BASE_LR at MAX_EPOCHS.
_C.SOLVER.WARMUP_FACTOR = 0.01
_C.SOLVER.WARMUP_EPOCHS = 5
_C.SOLVER.MIN_LR_FACTOR = 0.002  # (new; hard-coded in the reference)
_C.SOLVER.CHECKPOINT_PERIOD = 10
_C.SOLVER.LOG_PERIOD = 100
_C.SOLVER.EVAL_PERIOD = 10
_C.SOLVER.IMS_PER_BATCH = 64
# (new) Mixed precision: autocast with AMP_DTYPE ('float16' uses a GradScaler; on CPU float16 falls
# back to bfloat16, and a CPU without native bfloat16 (AVX512-BF16 / AMX) trains in float32 instead,
# where autocast would be slower).
_C.SOLVER.AMP = True
_C.SOLVER.AMP_DTYPE = "float16"
# (new) Under AMP the reference computes every loss inside the forward's autocast region, where autocast's
# op lists put the triplet distances' and diversity similarities' products in float16 (False, default).
# True: every loss term in float32 with autocast off (exact batch-hard distances for near pairs).
_C.SOLVER.AMP_LOSSES_FP32 = False
# (new) torch.compile the model (in place: state_dict keys and checkpoints are unchanged) for training
# and evaluation. The first steps of each input shape / train-eval mode compile (tens of seconds to
# minutes); shapes are static. COMPILE_MODE is torch.compile's mode: 'default', 'reduce-overhead'
# (CUDA graphs), 'max-autotune', 'max-autotune-no-cudagraphs'.
_C.SOLVER.COMPILE = False
_C.SOLVER.COMPILE_MODE = "default"
# (new) Abort after this many consecutive iterations with a non-finite loss (each one is skipped).
_C.SOLVER.MAX_NONFINITE = 5
# (new) torchrun: how long a collective (gradient all-reduce, barrier, gather) waits for the other
# ranks before failing the run, in minutes. Ranks wait while local rank 0 builds DATALOADER.CACHE and
# while rank 0 computes the metrics (+ re-ranking) of an evaluation: minutes for an MSMT17-size set
# (~3.5 / ~8.5 min on 2 CPU threads), longer than torch's NCCL default of 10 min allows for.
_C.SOLVER.DIST_TIMEOUT_MINUTES = 60.0
# (new) torchrun: DistributedDataParallel with static_graph=True instead of find_unused_parameters=True
# (the reference's). The parameters that never get a gradient (kept for checkpoint compatibility) are
# learnt in the first step instead of searched for in the autograd graph after every forward: less CPU
# time per step. The same training up to float rounding (the gradients differ in the last bits from the
# second step on; 1e-7 of the weights' norm after 3 tiny AdamW steps), hence off by default.
_C.SOLVER.DDP_STATIC_GRAPH = False
# (new) Also write TensorBoard event files to OUTPUT_DIR/tb (needs the tensorboard package).
_C.SOLVER.TENSORBOARD = False

# -----------------------------------------------------------------------------------------------
# TEST
# -----------------------------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.IMS_PER_BATCH = 128
_C.TEST.WEIGHT = ""
# 'yes': L2-normalise every token feature before the distance; 'no' does not (the original code
# normalises whatever this says).
_C.TEST.FEAT_NORM = "yes"
# (new) The evaluation's image path; the reference has two (bug 9.12). 'pil': PIL decode, torchvision
# Resize on the PIL image (PIL bilinear, filtering when it shrinks), ToTensor, Normalize -- its test_tsd.py,
# which printed the paper's figures. 'cv2': OpenCV decode and bilinear resize without antialiasing -- its
# in-training evaluation (train_tsd.py). 'auto': as the reference, 'pil' in test.py and the tools that
# evaluate a checkpoint (extract_features, vis_rank, vis_attn, export_onnx's check), 'cv2' in the
# evaluation during training.
_C.TEST.IMAGE_LOADER = "auto"
# TSD new benchmark (ALL / NPO / NTP) instead of the standard protocol.
_C.TEST.NEW_METRIC = False
# k-reciprocal re-ranking on the part-aware distance.
_C.TEST.RE_RANKING = False
_C.TEST.RE_RANKING_K1 = 20
_C.TEST.RE_RANKING_K2 = 6
_C.TEST.RE_RANKING_LAMBDA = 0.3
# (new) Average the features of the image and its horizontal flip.
_C.TEST.FLIP_FEATS = False
# (new) Extract features under autocast with SOLVER.AMP_DTYPE (float16 / bfloat16) on the rules of
# SOLVER.AMP (on a CPU bfloat16 only where it is native). Faster on GPUs; features and distances then
# carry half-precision rounding (metrics may move by ~0.1 point), so off by default (float32, the
# reference).
_C.TEST.AMP = False
# (new) Also report Rank-1 / mAP of each token alone (global, then each part of INPUT.MASK_PREPROCESS
# by name), in the printed table, results.json and val_results.json. A token alone ranks by its own
# Euclidean distance; queries that do not see it are left out (its 'queries' count) and gallery images
# that do not see it go to the end of the ranking. Never re-ranked.
_C.TEST.PER_PART = False

# -----------------------------------------------------------------------------------------------
_C.OUTPUT_DIR = ""
