// TensorRT plugin "AdaIN" (version "1", namespace ""), IPluginV3 with the OneCore / OneBuild /
// OneRuntime capabilities, for TensorRT 10.x and 11.x.
//
// The ONNX parser hands every `AdaIN` node written by stargan_rt/export/fusion.py to this plugin:
// its op_type is the plugin name, its attributes plugin_version / plugin_namespace select the
// creator and the others (epsilon, negative_slope, has_activation) arrive as plugin fields.
// Inputs x [N,C,H,W], gamma [N,C], beta [N,C] (all float32 or all float16, linear); one output
// like x. Loaded with trt.get_plugin_registry().load_library(path), which calls getCreators().
#include <NvInferRuntime.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "adain.h"

using namespace nvinfer1;

namespace {

constexpr char const* kName = "AdaIN";
constexpr char const* kVersion = "1";

struct AdainParams {
    float epsilon = 1e-5F;
    float negativeSlope = 0.2F;
    int32_t hasActivation = 1;
};

// ONNX attributes may arrive as 32- or 64-bit ints / floats depending on the parser version.
bool readFloat(PluginField const& f, float& out) {
    if (f.data == nullptr || f.length < 1) return false;
    if (f.type == PluginFieldType::kFLOAT32) { out = *static_cast<float const*>(f.data); return true; }
    if (f.type == PluginFieldType::kFLOAT64) { out = static_cast<float>(*static_cast<double const*>(f.data)); return true; }
    return false;
}

bool readInt(PluginField const& f, int32_t& out) {
    if (f.data == nullptr || f.length < 1) return false;
    if (f.type == PluginFieldType::kINT32) { out = *static_cast<int32_t const*>(f.data); return true; }
    if (f.type == PluginFieldType::kINT64) { out = static_cast<int32_t>(*static_cast<int64_t const*>(f.data)); return true; }
    return false;
}

class AdainPlugin final : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild,
                          public IPluginV3OneRuntime {
public:
    explicit AdainPlugin(AdainParams params) : mParams(params) { refreshFields(); }

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override { return new (std::nothrow) AdainPlugin(mParams); }

    // IPluginV3OneCore
    AsciiChar const* getPluginName() const noexcept override { return kName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return ""; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (nbOutputs != 1 || nbInputs != 3) return -1;
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                            DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept override {
        if (nbInputs != 3 || nbOutputs != 1 || inputs[0].nbDims != 4) return -1;
        outputs[0] = inputs[0];
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != 3 || nbOutputs != 1 || pos < 0 || pos > 3) return false;
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR) return false;
        if (pos == 0) return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        return desc.type == inOut[0].desc.type;  // gamma, beta and the output follow x
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept override {
        if (nbInputs != 3 || nbOutputs != 1 || in[0].desc.dims.nbDims != 4) return -1;
        if (in[1].desc.dims.nbDims != 2 || in[2].desc.dims.nbDims != 2) return -1;
        return 0;
    }

    size_t getWorkspaceSize(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*,
                            int32_t) const noexcept override {
        return 0;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*,
                          int32_t nbOutputs) noexcept override {
        return (nbInputs == 3 && nbOutputs == 1 && in[0].dims.nbDims == 4) ? 0 : -1;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
                    void* const* outputs, void*, cudaStream_t stream) noexcept override {
        Dims const& d = inputDesc[0].dims;
        int32_t const n = static_cast<int32_t>(d.d[0]), c = static_cast<int32_t>(d.d[1]);
        int32_t const hw = static_cast<int32_t>(d.d[2] * d.d[3]);
        cudaError_t status;
        if (inputDesc[0].type == DataType::kHALF) {
            status = stargan_adain_forward_f16(
                static_cast<__half const*>(inputs[0]), static_cast<__half const*>(inputs[1]),
                static_cast<__half const*>(inputs[2]), static_cast<__half*>(outputs[0]), n, c, hw,
                mParams.epsilon, mParams.hasActivation, mParams.negativeSlope, stream);
        } else {
            status = stargan_adain_forward_f32(
                static_cast<float const*>(inputs[0]), static_cast<float const*>(inputs[1]),
                static_cast<float const*>(inputs[2]), static_cast<float*>(outputs[0]), n, c, hw,
                mParams.epsilon, mParams.hasActivation, mParams.negativeSlope, stream);
        }
        return status == cudaSuccess ? 0 : -1;
    }

    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFieldCollection; }

private:
    void refreshFields() {
        mFields = {PluginField("epsilon", &mParams.epsilon, PluginFieldType::kFLOAT32, 1),
                   PluginField("negative_slope", &mParams.negativeSlope, PluginFieldType::kFLOAT32, 1),
                   PluginField("has_activation", &mParams.hasActivation, PluginFieldType::kINT32, 1)};
        mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

    AdainParams mParams;
    std::vector<PluginField> mFields;
    PluginFieldCollection mFieldCollection{};
};

class AdainPluginCreator final : public IPluginCreatorV3One {
public:
    AdainPluginCreator() {
        mFieldNames = {PluginField("epsilon", nullptr, PluginFieldType::kFLOAT32, 1),
                       PluginField("negative_slope", nullptr, PluginFieldType::kFLOAT32, 1),
                       PluginField("has_activation", nullptr, PluginFieldType::kINT32, 1)};
        mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
        mFieldCollection.fields = mFieldNames.data();
    }

    IPluginV3* createPlugin(AsciiChar const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
        AdainParams params;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
            PluginField const& field = fc->fields[i];
            if (field.name == nullptr) continue;
            bool ok = true;
            if (std::strcmp(field.name, "epsilon") == 0) ok = readFloat(field, params.epsilon);
            else if (std::strcmp(field.name, "negative_slope") == 0) ok = readFloat(field, params.negativeSlope);
            else if (std::strcmp(field.name, "has_activation") == 0) ok = readInt(field, params.hasActivation);
            if (!ok) return nullptr;  // a field of an unexpected type: refuse rather than guess
        }
        return new (std::nothrow) AdainPlugin(params);
    }

    PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }
    AsciiChar const* getPluginName() const noexcept override { return kName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return ""; }

private:
    std::vector<PluginField> mFieldNames;
    PluginFieldCollection mFieldCollection{};
};

}  // namespace

// Entry points TensorRT's IPluginRegistry::loadLibrary looks for.
extern "C" __attribute__((visibility("default"))) IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static AdainPluginCreator creator;
    static IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(ILoggerFinder*) {}
