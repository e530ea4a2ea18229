"""SelectLine API models as JSON carries them, spelled as in the Swagger file.

Each Struct is a subset of the model of the same name in `selectline-api.swagger.json`
(without the `SelectLine.Erp.` prefix): only the fields somsd reads or writes, so an install
that adds fields stays readable (unknown fields are skipped) and what we send has no nulls
(`omit_defaults`). Numbers are JSON numbers both ways: money is `Decimal` in somsd and goes out
as a JSON number (`ENCODER` uses `decimal_format="number"`), because the API's models declare
`number`, not strings.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

__all__ = [
    "DECODERS",
    "ENCODER",
    "AccessTokenModel",
    "ApiInfo",
    "ApiResponse",
    "Article",
    "ArticlePositionItem",
    "AttachmentInfo",
    "Credentials",
    "Customer",
    "CustomerAddress",
    "CustomerContact",
    "CustomerCreated",
    "DocumentCreateModel",
    "DocumentCreated",
    "DocumentDetailAddress",
    "DocumentDetailBusinessPartner",
    "DocumentPositionCreated",
    "DocumentPositionReadModel",
    "DocumentPositionWithShippingItemCreateModel",
    "DocumentReadModel",
    "DocumentUpdateModel",
    "EnumerationValue",
    "JournalAttachmentCreated",
    "JournalCreateModel",
    "JournalCreated",
    "JournalModelRead",
    "OpenItemAmount",
    "OpenItemDto",
    "OpenItemPage",
    "Stock",
    "StoreInformationUpdate",
    "SuccessorsDocumentData",
    "Warehouse",
]


class _Model(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Swagger spelling as is (PascalCase); absent and null fields read as None."""


class Credentials(_Model, frozen=True):
    """`AdministrationModule.Models.Credentials`: the body of `POST /Login`."""

    UserName: str
    Password: str
    AppKey: str | None = None


class AccessTokenModel(_Model, frozen=True):
    """`AdministrationModule.Models.AccessTokenModel`: sent as `<TokenType> <AccessToken>`."""

    AccessToken: str
    TokenType: str | None = None  # "LoginId"


class ApiInfo(_Model, frozen=True):
    """`WebApi.Models.ApiInfo`: `GET /Info`, no login needed."""

    Company: str | None = None
    Product: str | None = None
    Description: str | None = None
    Version: str | None = None
    BuildDate: str | None = None
    IsBackendManagerRunning: bool | None = None
    ServerTimeInUtc: str | None = None


class ApiResponse(_Model, frozen=True):
    """`WebApi.Models.ApiResponse.ApiResponse`: every error body (`StatusCode` is the .NET
    `HttpStatusCode` name, e.g. "NotFound")."""

    StatusCode: str | None = None
    ResponseCode: str | None = None
    ResponseId: int | None = None
    ResponseIdDescription: str | None = None
    Message: str | None = None
    Details: dict[str, object] | None = None


class Warehouse(_Model, frozen=True):
    """`Entities.WebApi.Warehouse`."""

    Number: str
    Name: str | None = None
    InactiveFlag: bool = False
    StorageMode: int = 0
    StorageType: int = 0
    OutsourcingLockFlag: bool = False
    StorageBlockLockFlag: bool = False


class Stock(_Model, frozen=True):
    """`Entities.WebApi.Stock`: one row per article, warehouse (`Number`) and storage place."""

    ArticleNumber: str
    Number: str  # the warehouse
    Id: int = 0
    StoragePlaceIdentifier: int = 0
    SerialId: int = 0
    PriceQuantity: Decimal = Decimal(1)
    WarehouseType: int = 0
    ArticleName: str | None = None
    WarehouseName: str | None = None
    Quantity: Decimal | None = None
    AvailableStock: Decimal | None = None
    ReservedStock: Decimal | None = None


class Article(_Model, frozen=True):
    """`ArticleModule.Models.Article` (the fields somsd maps)."""

    Number: str
    EuropeanArticleNumber: str | None = None
    Name: str | None = None
    QuantityUnit: str | None = None
    IsWarehouseArtikel: bool | None = None  # sic, as in the spec
    ArticleKind: str | None = None
    IsInactive: bool = False
    IsShopActive: bool = True


class DocumentDetailAddress(_Model, frozen=True):
    """`DocumentModule.Models.DocumentDetailAddress`; `Number` is the customer number."""

    Number: str | None = None
    Street: str | None = None
    City: str | None = None
    ZipCode: str | None = None
    CountryId: str | None = None


class DocumentDetailBusinessPartner(_Model, frozen=True):
    """`DocumentModule.Models.DocumentDetailBusinessPartner`: `BusinessPartnerContract` is
    "Ihr Auftrag" (the shop's order number), `BusinessPartnerReferenceNumber` "Ihr Zeichen"."""

    BusinessPartnerReferenceNumber: str | None = None
    BusinessPartnerContract: str | None = None
    BusinessPartnerContractDate: str | None = None
    FirstName: str | None = None
    LastName: str | None = None
    Company: str | None = None
    Address: DocumentDetailAddress | None = None


class DocumentCreateModel(_Model, frozen=True):
    """`DocumentModule.Models.DocumentCreateModel` (`POST /Documents`)."""

    KindFlag: str
    Number: str | None = None
    Date: str | None = None
    ValutaDate: str | None = None
    BusinessPartner: DocumentDetailBusinessPartner | None = None
    CurrencyCode: str | None = None
    PriceKindFlag: str | None = None  # N net | B gross | S tax-free | E EU inbound
    WarehouseNumber: str | None = None
    HeaderText: str | None = None
    OurReference: str | None = None
    StatusFlag: str | None = None


class DocumentUpdateModel(_Model, frozen=True):
    """`DocumentModule.Models.DocumentUpdateModel` (`PUT /Documents/{key}`): changed fields."""

    BusinessPartner: DocumentDetailBusinessPartner | None = None
    HeaderText: str | None = None


class DocumentCreated(_Model, frozen=True):
    """`WebApi.Models.Document.DocumentCreated`: `DocumentKey` = KindFlag + number."""

    DocumentKey: str
    DocumentKind: str | None = None
    DocumentNumber: str | None = None


class DocumentReadModel(_Model, frozen=True):
    """`DocumentModule.Models.DocumentReadModel` (the fields somsd reads)."""

    Number: str
    KindFlag: str
    Date: str | None = None
    GrossAmount: Decimal | None = None
    NetAmount: Decimal | None = None
    TaxAmount: Decimal | None = None
    StatusFlag: str | None = None
    CurrencyCode: str | None = None
    PriceKindFlag: str | None = None
    BusinessPartner: DocumentDetailBusinessPartner | None = None

    @property
    def key(self) -> str:
        """The document key the routes take: KindFlag + number (`FAU345`)."""
        return self.KindFlag + self.Number


class StoreInformationUpdate(_Model, frozen=True):
    """`Entities.WebApi.DocumentPositionStoreInformationUpdate`: a position (by its GUID) and
    the quantity to book or transfer."""

    Identifier: str | None = None
    ArticleNumber: str | None = None
    Quantity: Decimal | None = None
    Warehouse: str | None = None


class ArticlePositionItem(_Model, frozen=True):
    """`WebApi.Models.Document.ArticlePositionItem` (`POST /Documents/{key}/ArticleItem`)."""

    ArticleNumber: str
    CalculatedQuantityValue: Decimal  # the quantity
    UnitPrice: Decimal | None = None
    PriceUnitFactor: Decimal | None = None  # the quantity the unit price is for (BT-149)
    Name: str | None = None
    TaxRate: Decimal | None = None
    TaxCode: str | None = None
    WarehouseId: str | None = None
    Memo: str | None = None


class DocumentPositionWithShippingItemCreateModel(_Model, frozen=True):
    """`DocumentModule.Models.DocumentPositionWithShippingItemCreateModel`."""

    ArticleNumber: str  # a shipping article
    UnitPrice: Decimal
    AlternativePositionDescription: str | None = None


class DocumentPositionCreated(_Model, frozen=True):
    """`WebApi.Models.Document.DocumentPositionCreated`."""

    DocumentKey: str
    PositionIdentifier: str
    DocumentKind: str | None = None
    DocumentNumber: str | None = None


class DocumentPositionReadModel(_Model, frozen=True):
    """`DocumentModule.Models.DocumentPositionReadModel`; `PositionKind` A article, E shipping."""

    Identifier: str
    PositionKind: str | None = None
    PositionNumber: int | None = None
    PredecessorIdentifier: str | None = None
    ArticleNumber: str | None = None
    Name: str | None = None
    Quantity: Decimal | None = None
    CalculatedQuantityValue: Decimal | None = None
    UnitPrice: Decimal | None = None
    TotalPrice: Decimal | None = None
    TaxRate: Decimal | None = None
    StatusFlag: str | None = None
    QuantityTransferredFromDocumentPredecessor: Decimal | None = None
    QuantityTakenOverByDocumentSuccessor: Decimal | None = None


class SuccessorsDocumentData(_Model, frozen=True):
    """`DocumentModule.Models.SuccessorsDocumentData`. `Positions: []` transfers every
    position with quantity 0 (spec text), so somsd always lists the positions it means."""

    DocumentKindDestination: str
    Positions: tuple[StoreInformationUpdate, ...] = ()


class EnumerationValue(_Model, frozen=True):
    """`WebApi.Common.EnumerationValue[..DocumentStatusFlag]`: the name wins when both given."""

    Value: int | None = None
    Name: str | None = None


class CustomerAddress(_Model, frozen=True):
    Street: str | None = None
    City: str | None = None
    ZipCode: str | None = None
    CountryId: str | None = None


class CustomerContact(_Model, frozen=True):
    """`PersonModule.Models.PersonDetailContact`."""

    EMail1: str | None = None
    EMail2: str | None = None


class Customer(_Model, frozen=True):
    """`CustomerModule.Models.Customer` (the fields somsd writes and matches on)."""

    Number: str | None = None
    FirstName: str | None = None
    LastName: str | None = None
    Company: str | None = None
    IsPrivatePerson: bool | None = None
    IsInactive: bool = False
    Address: CustomerAddress | None = None
    Contact: CustomerContact | None = None


class CustomerCreated(_Model, frozen=True):
    """`WebApi.Models.Customer.CustomerCreated`."""

    CustomerNumber: str


class OpenItemAmount(_Model, frozen=True):
    """`Server.DataTransfer.AmountDto`: `Sum` the item's amount, `Outstanding` what is open."""

    Currency: str | None = None
    Sum: Decimal = Decimal(0)
    Outstanding: Decimal = Decimal(0)
    CompletedOn: str | None = None


class OpenItemDto(_Model, frozen=True):
    """`Server.DataTransfer.OpenItemDto` (an "OP"): `YourOrder` carries the order number,
    `OpenItemDocument` the invoice."""

    OpenItemNumber: int
    Date: str | None = None
    CustomerSupplierNumber: str | None = None
    OpenItemDocument: str | None = None
    YourOrder: str | None = None
    Status: str | None = None
    Amount: OpenItemAmount | None = None


class OpenItemPage(_Model, frozen=True):
    """`Server.Common.Dtos.OData.ODataValue[List[OpenItemDto]]`: `/Accounting/*` lists are
    OData-style (`top`/`skip`), unlike the Wawi lists (`page`/`items`)."""

    Value: tuple[OpenItemDto, ...] = ()


class JournalCreateModel(_Model, frozen=True):
    """`JournalModule.Models.DocumentJournalModelCreate`: a note on a document (e.g. the
    warehouse's tracking number, reference §11)."""

    Date: str
    StatusId: int
    Label: str
    Text: str
    ContactKind: str | None = None
    CategoryLabel: str | None = None


class JournalModelRead(_Model, frozen=True):
    """`JournalModule.Models.JournalModelRead`."""

    Identifier: str | None = None
    Date: str | None = None
    StatusId: int = 0
    Label: str | None = None
    Text: str | None = None
    ContactKind: str | None = None
    CategoryLabel: str | None = None


class JournalCreated(_Model, frozen=True):
    """`WebApi.Models.Journal.JournalCreated`."""

    JournalIdentifier: str


class JournalAttachmentCreated(_Model, frozen=True):
    """`WebApi.Models.Journal.JournalAttachmentCreated`."""

    JournalIdentifier: str | None = None
    AttachmentId: int = 0


class AttachmentInfo(_Model, frozen=True):
    """`Common.Models.ModuleModels.AttachmentInfo`."""

    AttachmentIdentifier: int = 0
    AttachmentType: int = 0
    JournalIdentifier: str | None = None
    Filename: str | None = None


ENCODER = msgspec.json.Encoder(decimal_format="number")


class _Decoders:
    """One typed decoder per answer model, built once (msgspec's perf advice)."""

    def __init__(self) -> None:
        self.token = msgspec.json.Decoder(AccessTokenModel)
        self.info = msgspec.json.Decoder(ApiInfo)
        self.error = msgspec.json.Decoder(ApiResponse)
        self.warehouses = msgspec.json.Decoder(list[Warehouse])
        self.stocks = msgspec.json.Decoder(list[Stock])
        self.articles = msgspec.json.Decoder(list[Article])
        self.documents = msgspec.json.Decoder(list[DocumentReadModel])
        self.document = msgspec.json.Decoder(DocumentReadModel)
        self.created = msgspec.json.Decoder(DocumentCreated)
        self.position_created = msgspec.json.Decoder(DocumentPositionCreated)
        self.positions = msgspec.json.Decoder(list[DocumentPositionReadModel])
        self.customers = msgspec.json.Decoder(list[Customer])
        self.customer_created = msgspec.json.Decoder(CustomerCreated)
        self.open_items = msgspec.json.Decoder(OpenItemPage)
        self.journals = msgspec.json.Decoder(list[JournalModelRead])
        self.journal_created = msgspec.json.Decoder(JournalCreated)
        self.attachment_created = msgspec.json.Decoder(JournalAttachmentCreated)
        self.attachments = msgspec.json.Decoder(list[AttachmentInfo])


DECODERS = _Decoders()
