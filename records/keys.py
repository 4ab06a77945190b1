"""tf.train.Example feature keys of the record contract.

These are the Object Detection API's keys (object_detection/core/standard_fields.py,
TfExampleFields), which Model Garden's `TfExampleDecoder` also reads. Every record this
project writes uses them and only them, so OD API, Model Garden and this project read each
other's files.
"""

IMAGE_ENCODED = "image/encoded"  # original JPEG/PNG bytes, never re-encoded
IMAGE_FORMAT = "image/format"  # b"jpeg" or b"png"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"  # numeric string: Model Garden's decoder parses it
IMAGE_KEY_SHA256 = "image/key/sha256"

OBJECT_BBOX_XMIN = "image/object/bbox/xmin"  # normalized to [0, 1]
OBJECT_BBOX_YMIN = "image/object/bbox/ymin"
OBJECT_BBOX_XMAX = "image/object/bbox/xmax"
OBJECT_BBOX_YMAX = "image/object/bbox/ymax"
OBJECT_CLASS_LABEL = "image/object/class/label"  # label-map ids, 1-based
OBJECT_CLASS_TEXT = "image/object/class/text"  # label-map names
OBJECT_AREA = "image/object/area"  # pixels of the original image
OBJECT_IS_CROWD = "image/object/is_crowd"
OBJECT_DIFFICULT = "image/object/difficult"  # Pascal VOC
OBJECT_GROUP_OF = "image/object/group_of"  # Open Images
OBJECT_MASK = "image/object/mask"  # one full-image single-channel PNG per instance, 0/1

BBOX_KEYS = (OBJECT_BBOX_YMIN, OBJECT_BBOX_XMIN, OBJECT_BBOX_YMAX, OBJECT_BBOX_XMAX)
