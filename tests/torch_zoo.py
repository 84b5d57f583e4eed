"""PyTorch modules of the zoo's architectures, written as torchvision and Hugging Face
write them (their parameter names included): what tests/models/test_zoo.py checks
mlc.models against and benchmarks/bench_zoo.py times them against. Needs torch."""
import torch

tnn = torch.nn


class BasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU()
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class TorchResNet(tnn.Module):
    """torchvision.models.ResNet, as written there (its parameter names included)."""

    def __init__(self, block, layers, num_classes):
        super().__init__()
        self.inplanes = 64
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU()
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                        tnn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchBertLayer(tnn.Module):
    def __init__(self, h, heads):
        super().__init__()
        self.heads = heads
        self.attention = tnn.Module()
        self.attention.self = tnn.Module()
        for n in ("query", "key", "value"):
            setattr(self.attention.self, n, tnn.Linear(h, h))
        self.attention.output = tnn.Module()
        self.attention.output.dense, self.attention.output.LayerNorm = tnn.Linear(h, h), tnn.LayerNorm(h, eps=1e-12)
        self.intermediate = tnn.Module()
        self.intermediate.dense = tnn.Linear(h, 4 * h)
        self.output = tnn.Module()
        self.output.dense, self.output.LayerNorm = tnn.Linear(4 * h, h), tnn.LayerNorm(h, eps=1e-12)

    def forward(self, x):
        b, t, h = x.shape
        s = self.attention.self

        def split(y):
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        q, k, v = split(s.query(x)), split(s.key(x)), split(s.value(x))
        ctx = torch.softmax(q @ k.transpose(-1, -2) / (h // self.heads) ** 0.5, -1) @ v
        ctx = ctx.transpose(1, 2).reshape(b, t, h)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(ctx))
        ffn = self.output.dense(torch.nn.functional.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + ffn)


class TorchBert(tnn.Module):
    """Hugging Face's BertModel without masks or dropout (the same parameter names)."""

    def __init__(self, layers, h, heads, vocab, max_positions=512):
        super().__init__()
        self.embeddings = tnn.Module()
        self.embeddings.word_embeddings = tnn.Embedding(vocab, h)
        self.embeddings.position_embeddings = tnn.Embedding(max_positions, h)
        self.embeddings.token_type_embeddings = tnn.Embedding(2, h)
        self.embeddings.LayerNorm = tnn.LayerNorm(h, eps=1e-12)
        self.embeddings.register_buffer("position_ids", torch.arange(max_positions)[None])
        self.encoder = tnn.Module()
        self.encoder.layer = tnn.ModuleList(TorchBertLayer(h, heads) for _ in range(layers))
        self.pooler = tnn.Module()
        self.pooler.dense = tnn.Linear(h, h)

    def forward(self, ids):
        e = self.embeddings
        t = ids.shape[1]
        x = e.word_embeddings(ids) + e.position_embeddings(e.position_ids[:, :t]) + e.token_type_embeddings.weight[0]
        x = e.LayerNorm(x)
        for layer in self.encoder.layer:
            x = layer(x)
        return x


class TorchBertClassifier(tnn.Module):
    """BertForSequenceClassification: "bert." before every encoder name."""

    def __init__(self, layers, h, heads, vocab, num_classes):
        super().__init__()
        self.bert = TorchBert(layers, h, heads, vocab)
        self.classifier = tnn.Linear(h, num_classes)

    def forward(self, ids):
        first = self.bert(ids)[:, 0]
        return self.classifier(torch.tanh(self.bert.pooler.dense(first)))


class TorchWideDeep(tnn.Module):
    def __init__(self, n_wide, n_categories, n_dense, dim=8, hidden=(64, 32)):
        super().__init__()
        self.wide = tnn.Linear(n_wide, 1)
        self.embeddings = tnn.ModuleList(tnn.Embedding(n, dim) for n in n_categories)
        sizes = (len(n_categories) * dim + n_dense, *hidden)
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [tnn.Linear(a, b), tnn.ReLU()]
        self.deep = tnn.Sequential(*layers, tnn.Linear(sizes[-1], 1))

    def forward(self, wide, categories, dense):
        deep_in = torch.cat([e(categories[:, f]) for f, e in enumerate(self.embeddings)] + [dense], 1)
        return torch.sigmoid(self.wide(wide) + self.deep(deep_in))[:, 0]


class TorchNeuMF(tnn.Module):
    def __init__(self, users, items, dim, mlp):
        super().__init__()
        self.gmf_user, self.gmf_item = tnn.Embedding(users, dim), tnn.Embedding(items, dim)
        self.mlp_user, self.mlp_item = tnn.Embedding(users, mlp[0] // 2), tnn.Embedding(items, mlp[0] // 2)
        layers = []
        for a, b in zip(mlp[:-1], mlp[1:]):
            layers += [tnn.Linear(a, b), tnn.ReLU()]
        self.mlp = tnn.Sequential(*layers)
        self.predict = tnn.Linear(dim + mlp[-1], 1)

    def forward(self, u, i):
        gmf = self.gmf_user(u) * self.gmf_item(i)
        mlp = self.mlp(torch.cat([self.mlp_user(u), self.mlp_item(i)], 1))
        return torch.sigmoid(self.predict(torch.cat([gmf, mlp], 1)))[:, 0]


class TorchLSTMLM(tnn.Module):
    def __init__(self, vocab, hidden, layers):
        super().__init__()
        self.embedding = tnn.Embedding(vocab, hidden)
        self.lstm = tnn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.decoder = tnn.Linear(hidden, vocab)

    def forward(self, ids):
        return self.decoder(self.lstm(self.embedding(ids))[0])
